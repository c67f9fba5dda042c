"""Runtime classes of the node kinds declared in core.engine.kinds."""
