"""An entry point that cannot be imported, on purpose (pixsrc must survive it)."""

raise ImportError("pixsrc-demo-plugin: the broken-demo type is broken on purpose")
