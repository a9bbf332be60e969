"""Remote CRMs LeadBot keeps in step with: amoCRM (Kommo), Bitrix24 and Meta's Conversions API."""
