"""The OpenAI Agents SDK against the bridge: both model classes, both backends."""

from __future__ import annotations

import re

import agents
import pytest
from openai import AsyncOpenAI

from tests.support import seed
from tests.support.bridge import Bridge


@agents.function_tool
def get_flights(date_1: str, date_2: str) -> str:
    """returns the number of flights between two dates"""
    return seed.get_flights(date_1, date_2)


@agents.function_tool
def my_cat_born_date(cat_name: str) -> str:
    """returns my cat's born date"""
    return seed.my_cat_born_date(cat_name)


@pytest.mark.parametrize("model_class", ["OpenAIResponsesModel", "OpenAIChatCompletionsModel"])
@pytest.mark.parametrize("model", ["flights-assistant", "flights-agent"])
async def test_runner_answers_the_flights_question(bridge: Bridge, model: str, model_class: str) -> None:
    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{bridge.url}/v1", api_key="unused", max_retries=0)
    agent = agents.Agent(
        name="flights",
        instructions="Answer questions about flights.",
        tools=[get_flights, my_cat_born_date],
        model=getattr(agents, model_class)(model=model, openai_client=client),
    )
    try:
        result = await agents.Runner.run(agent, seed.QUESTION)
    finally:
        await client.close()
    match = re.search(r"There are (\d+) flights", str(result.final_output))
    assert match, result.final_output
    assert int(match.group(1)) == seed.expected_flights()
