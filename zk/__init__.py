"""ZooKeeper: the only module that knows znode paths; client, config store, managed server."""
