"""The master web console and the node status page (static files served by FastAPI)."""
