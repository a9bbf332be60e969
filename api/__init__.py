"""The reference's HTTP API (FastAPI) over the same repositories, permissions and events as the bot."""
