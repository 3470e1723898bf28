"""Speech engines behind one interface (``base.Engine``), built by ``registry.create_engine``."""
