"""The export and engine-build toolchain, installed as ``edgeface.export`` (needs the ``export`` extra)."""
