"""The Flume master: command service, translations, REST API, flumectl."""
