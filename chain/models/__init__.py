"""The marketplace mirror and the sync's records, one module per concern (mirror, sync, rollups)."""
from .mirror import (  # noqa: F401
    AMOUNT,
    AMOUNT_CEILING,
    Arbitrator,
    ArbitratorQuerySet,
    CONTRACT_STATUS,
    chain_choices,
    CloseReason,
    EventSyncCursor,
    OPEN_STATUSES,
    Order,
    OrderQuerySet,
    OrderStatus,
    UserProfile,
    UserProfileQuerySet,
    UserTier,
)
from .sync import (  # noqa: F401
    BlockHash,
    ChainEvent,
    ProviderState,
    ReconciliationDrift,
    RpcProvider,
    Token,
)
from .rollups import (  # noqa: F401
    ChainState,
    DailyOrderStats,
    TopSeller,
)
