"""The marketplace mirror and the sync's records, one module per concern (mirror, sync, rollups)."""
from .mirror import (  # noqa: F401
    AMOUNT,
    AMOUNT_CEILING,
    CONTRACT_STATUS,
    OPEN_STATUSES,
    Arbitrator,
    ArbitratorQuerySet,
    CloseReason,
    EventSyncCursor,
    Order,
    OrderQuerySet,
    OrderStatus,
    UserProfile,
    UserProfileQuerySet,
    UserTier,
    chain_choices,
)
from .rollups import (  # noqa: F401
    ChainState,
    DailyOrderStats,
    TopSeller,
)
from .sync import (  # noqa: F401
    BlockHash,
    ChainEvent,
    ProviderState,
    ReconciliationDrift,
    RpcProvider,
    SyncCatchup,
    Token,
)
