"""Typed callback data (ids and enums only, always within Telegram's 64 bytes) and keyboard builders."""
