"""Operations records, one module per concern."""
from .actions import (  # noqa: F401
    ACTION_KINDS,
    AWAITING,
    IN_FLIGHT,
    ActionStatus,
    AutoPauseSwitch,
    AutoPauseTrigger,
    ContractAction,
    Custody,
    EffectCheck,
    PlatformFlag,
    SignerNonce,
    TimeoutGrace,
)
from .backups import BackupRun, BackupStatus, BackupTrigger, RestoreTest, RestoreTestStatus  # noqa: F401
from .console import (  # noqa: F401
    INCIDENT_FLOW,
    Incident,
    IncidentEvent,
    IncidentStatus,
    OpsReport,
    RotationReason,
    SecretRotation,
    SecretSchedule,
)
from .custody import ActionSignature, SignatureSource, StaffSigningKey  # noqa: F401
from .monitoring import DrillRun, DrillStatus  # noqa: F401
