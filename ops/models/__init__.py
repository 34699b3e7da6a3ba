"""Operations records, one module per concern."""
from .actions import (  # noqa: F401
    ACTION_KINDS,
    AWAITING,
    IN_FLIGHT,
    ActionStatus,
    ContractAction,
    Custody,
    PlatformFlag,
    SignerNonce,
)
from .custody import ActionSignature, SignatureSource, StaffSigningKey  # noqa: F401
from .alerts import Alert, AlertSeverity  # noqa: F401
from .audit import AuditLog  # noqa: F401
from .console import (  # noqa: F401
    INCIDENT_FLOW,
    SEVERITY_RANK,
    AlertChannel,
    AlertDelivery,
    ChannelKind,
    DeliveryStatus,
    Incident,
    IncidentEvent,
    IncidentStatus,
    OpsReport,
    RotationReason,
    SecretRotation,
    SecretSchedule,
)
from .backups import BackupRun, BackupStatus, BackupTrigger, RestoreTest, RestoreTestStatus  # noqa: F401
