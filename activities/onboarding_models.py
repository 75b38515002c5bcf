"""HR onboarding: the hire an accepted offer describes, and which systems a
hire is provisioned in.

Pure: the workflow reads these models and derives a hire's systems with
:func:`systems_for` in its predicates, so the set is the same on every
replay and needs no step of its own.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Department = Literal["engineering", "sales", "finance", "people", "operations"]
System = Literal["directory", "hris", "payroll", "laptop", "badge", "admin_access"]

# The legal entity that employs and pays a hire in each country. A country
# without one hires through an employer of record, outside this process.
PAYROLL_ENTITIES: dict[str, str] = {
    "DE": "Baton GmbH",
    "GB": "Baton Ltd",
    "NL": "Baton B.V.",
    "ES": "Baton Iberia S.L.",
}
# Where an on-site hire works, and is badged. The team in Spain is remote.
OFFICES: dict[str, str] = {"DE": "Berlin", "GB": "London", "NL": "Amsterdam"}


class BankDetails(BaseModel):
    """Where the salary goes: what HR and finance approve together."""

    model_config = ConfigDict(extra="forbid")

    account_holder: str = Field(min_length=1)
    iban: str = Field(
        pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$",
        description="Upper case, no spaces: DE89370400440532013000",
    )


class Hire(BaseModel):
    """A hire as an accepted offer states them (samples/hr_onboarding/)."""

    model_config = ConfigDict(extra="forbid")

    employee_id: str = Field(pattern=r"^E-[0-9]{4,}$", description="E-1042: the HRIS's key")
    name: str = Field(min_length=1)
    role: str = Field(min_length=1, description="The job title")
    department: Department
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 code: DE, GB, NL, ES")
    remote: bool = False
    start_date: date
    hiring_manager: str = Field(min_length=1, description="The directory user who confirms day one")
    bank: BankDetails

    @model_validator(mode="after")
    def _employable_here(self) -> Hire:
        if self.country not in PAYROLL_ENTITIES:
            raise ValueError(
                f"no payroll entity in {self.country} (there is one in "
                f"{', '.join(PAYROLL_ENTITIES)}): hire through the employer of record"
            )
        if not self.remote and self.country not in OFFICES:
            raise ValueError(
                f"there is no office in {self.country} (offices: "
                f"{', '.join(f'{c} {city}' for c, city in OFFICES.items())}): "
                'set "remote": true, or a country with an office'
            )
        return self

    @property
    def office(self) -> str | None:
        return None if self.remote else OFFICES[self.country]

    @property
    def email(self) -> str:
        return ".".join(self.name.lower().split()) + "@baton.example"


def systems_for(hire: Hire) -> list[System]:
    """Every hire gets an account, an HRIS record, payroll and a laptop; a
    badge only for an office; admin access only in engineering."""
    systems: list[System] = ["directory", "hris", "payroll", "laptop"]
    if not hire.remote:
        systems.append("badge")
    if hire.department == "engineering":
        systems.append("admin_access")
    return systems
