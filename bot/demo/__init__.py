"""The sandbox: ``leadbot demo`` runs the real bot against a local stand-in for Telegram and a web page.

``server`` is the Bot API stand-in and the page's backend, ``page.html`` the page, ``html`` what the
page may render, ``seed`` the team and leads, ``run`` what puts them together.
"""
