"""The Flume node: spec language, component library, logical node driver."""
