"""The plan's graph (orchestrator/plan/dag.py) against networkx on random graphs: the same
nodes, edges and neighbours in the same order, the same walks, the same union; and a run
command that never needs networkx does not import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.plan.dag import Dag

NODES = [f"s{i}" for i in range(12)]

edges_st = st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NODES)), max_size=40)


def _both(nodes: list[str], edges: list[tuple[str, str]]) -> tuple[Dag, nx.DiGraph]:
    dag, ref = Dag(), nx.DiGraph()
    for i, n in enumerate(nodes):
        dag.add_node(n, index=i)
        ref.add_node(n, index=i)
    for u, v in edges:
        dag.add_edge(u, v)
        ref.add_edge(u, v)
    return dag, ref


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.lists(st.sampled_from(NODES), unique=True),
    edges=edges_st,
    removed=edges_st,
    other=edges_st,
)
def test_the_dag_behaves_as_a_networkx_digraph(
    nodes: list[str],
    edges: list[tuple[str, str]],
    removed: list[tuple[str, str]],
    other: list[tuple[str, str]],
) -> None:
    dag, ref = _both(nodes, edges)
    assert list(dag) == list(ref) and len(dag) == len(ref)
    assert list(dag.nodes(data="index")) == list(ref.nodes(data="index"))
    assert dag.edges == list(ref.edges) and dag.number_of_edges() == ref.number_of_edges()
    for n in ref:
        assert list(dag.successors(n)) == list(ref.successors(n))
        assert list(dag.predecessors(n)) == list(ref.predecessors(n))
        assert dag.in_edges(n) == list(ref.in_edges(n))
        assert dag.out_edges(n) == list(ref.out_edges(n))
        assert (dag.in_degree(n), dag.out_degree(n)) == (ref.in_degree(n), ref.out_degree(n))
        assert dag.descendants(n) == nx.descendants(ref, n)
        assert dag.ancestors(n) == nx.ancestors(ref, n)
        for m in ref:
            assert dag.has_path(n, m) == nx.has_path(ref, n, m)
    assert dag.is_acyclic() == nx.is_directed_acyclic_graph(ref)
    assert nx.utils.graphs_equal(dag.to_networkx(), ref)

    dag.remove_edges_from(removed)
    ref.remove_edges_from([e for e in removed if ref.has_edge(*e)])
    assert dag.edges == list(ref.edges)
    assert {n: list(p) for n, p in dag.pred.items()} == {n: list(p) for n, p in ref.pred.items()}

    o_dag, o_ref = _both(list(reversed(nodes)), other)
    o_dag.add_node(NODES[0], index=99)
    o_ref.add_node(NODES[0], index=99)
    union, expected = dag.compose(o_dag), nx.compose(ref, o_ref)
    assert list(union.nodes(data="index")) == list(expected.nodes(data="index"))
    assert union.edges == list(expected.edges)


def test_a_run_command_does_not_import_networkx(tmp_path: Path) -> None:
    """Validating and planning a runbook without a cycle leaves networkx unimported (it costs
    every run ~70 ms of start-up); a runbook with a cycle has it found by networkx."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "active: a\nsites:\n  a: {hosts: {x: {address: 127.0.0.1, transport: local}}}\n"
        "  b: {hosts: {y: {address: 127.0.0.1, transport: local}}}\n"
    )
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(
        "name: g\nsteps:\n  - {id: one, hosts: '@target', run: 'true', undo: 'true'}\n"
        "  - {id: two, hosts: '@target', run: 'true', undo: 'true', needs: [one]}\n"
    )
    bad.write_text(
        "name: b\nsteps:\n  - {id: one, hosts: '@target', run: 'true', needs: [two]}\n"
        "  - {id: two, hosts: '@target', run: 'true', needs: [one]}\n"
    )
    code = (
        "import sys\nfrom orchestrator.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
        "print('networkx' in sys.modules)\n"
    )

    def run(*args: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code, *args, "-i", str(inventory)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
        )
        return out.stdout.split()

    for args in (("validate", "-r", str(good)), ("plan", "b", "-r", str(good))):
        assert run(*args)[-1] == "False", args
    out = run("validate", "-r", str(bad))
    assert out[-3:] == ["exit", "2", "True"]
