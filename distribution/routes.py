"""The Distribution service's route table: its own API plus the shared artifact API for source repos."""

from __future__ import annotations
