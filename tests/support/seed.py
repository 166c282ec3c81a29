"""The seed notebook's scenario: its question, its two functions (verbatim logic) and their tools."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

from dateutil.parser import parse
from dateutil.relativedelta import relativedelta

from app.emulator.script import EASTER_2021, FLIGHTS_FUNCTIONS

QUESTION = "How many flights do we have between my cat Mike born date and Easter 2021?"


def get_flights(date_1: str, date_2: str) -> str:
    """Returns the number of flights in a date interval."""
    return json.dumps({"flights": abs((parse(date_2) - parse(date_1)).days)})


def my_cat_born_date(cat_name: str = "") -> str:
    """Returns my cat's born date (ten years ago today)."""
    ten_years_ago = datetime.date.today() - relativedelta(years=10)
    return json.dumps({"cat_born_date": ten_years_ago.strftime("%Y-%m-%d")})


FUNCTIONS: dict[str, Any] = {"get_flights": get_flights, "my_cat_born_date": my_cat_born_date}


def call(name: str, arguments: str) -> str:
    """Run one of the seed's functions the way the notebook does: by name, with JSON arguments."""
    return str(FUNCTIONS[name](**json.loads(arguments or "{}")))


def expected_flights() -> int:
    born = json.loads(my_cat_born_date("Mike"))["cat_born_date"]
    return int(json.loads(get_flights(born, EASTER_2021))["flights"])


# The notebook's tools, in the Assistants / Chat Completions shape: the emulator's flights agent holds the
# one copy of their definitions (tests may import the emulator; it imports nothing from tests).
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": copy.deepcopy(f)} for f in FLIGHTS_FUNCTIONS]

# The same tools in the Responses (flat) shape.
RESPONSES_TOOLS: list[dict[str, Any]] = [{"type": "function", **t["function"]} for t in TOOLS]
