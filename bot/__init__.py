"""LeadBot: a Telegram-bot CRM for real-estate sales teams."""
