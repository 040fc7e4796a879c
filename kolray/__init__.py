"""kolray: Solana KOL wallet tracking and 3x prediction on Ray."""

__version__ = "0.1.0"
