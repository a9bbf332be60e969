from db.repositories.leads import LeadChanges, LeadDetail, LeadDraft, LeadFilter, LeadPage, LeadRepository
from db.repositories.users import InviteRepository, UserRepository

__all__ = [
    "InviteRepository",
    "LeadChanges",
    "LeadDetail",
    "LeadDraft",
    "LeadFilter",
    "LeadPage",
    "LeadRepository",
    "UserRepository",
]
