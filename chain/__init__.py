"""Chain mirror: models, sync, RPC and contract access."""
