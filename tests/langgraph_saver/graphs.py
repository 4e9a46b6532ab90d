"""A small LangGraph application for the saver's tests: a conditional edge, a subgraph with
an interrupt in it (so the subgraph's checkpoints live in a namespace of their own), and a
reducer (``steps`` accumulates the parent's nodes that ran)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt


class Article(TypedDict, total=False):
    topic: str
    steps: Annotated[list[str], operator.add]
    approved: bool
    verdict: str


def plan(state: Article) -> dict[str, Any]:
    return {"steps": ["plan"]}


def route(state: Article) -> str:
    """The conditional edge: risky topics go through review, the others straight out."""
    return "review" if state["topic"].startswith("risky") else "publish"


class Review(TypedDict, total=False):
    """The subgraph's state: the keys it shares with ``Article`` pass in and out."""

    topic: str
    approved: bool
    verdict: str


def ask(state: Review) -> dict[str, Any]:
    answer = interrupt({"question": f"publish {state['topic']!r}?"})
    return {"approved": answer == "yes"}


def note(state: Review) -> dict[str, Any]:
    return {"verdict": "approved" if state.get("approved") else "rejected"}


def reviewed(state: Article) -> dict[str, Any]:
    return {"steps": ["review"]}


def publish(state: Article) -> dict[str, Any]:
    return {"steps": ["publish"]}


def review_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The subgraph: ask a person (an interrupt), then write the verdict down."""
    builder = StateGraph(Review)
    builder.add_node("ask", ask)
    builder.add_node("note", note)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "note")
    builder.add_edge("note", END)
    return builder.compile()


def article_graph(saver: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(Article)
    builder.add_node("plan", plan)
    builder.add_node("review", review_graph())
    builder.add_node("reviewed", reviewed)
    builder.add_node("publish", publish)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route, ["review", "publish"])
    builder.add_edge("review", "reviewed")
    builder.add_edge("reviewed", "publish")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver)
