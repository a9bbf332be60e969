"""The one presentation place: what the core decided becomes a Telegram message here.

``presenter`` turns outbox rows into messages for the delivery worker (``Presenter``, ``GONE``,
``message_payload``); ``views`` and ``cards`` build the texts handlers show; ``notifications`` and
``reminders`` hold the per-kind renderers. This package module imports nothing itself, so the HTTP API,
the reports and the exports use ``views`` without importing aiogram (which the renderers' keyboards
need and which takes seconds to import).
"""
