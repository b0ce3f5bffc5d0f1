"""Stateful property tests of circuit implementations against the reference model
(`circuit_contract`): the memory store with and without its lock-free success batching,
and a load/decide/save circuit over `CircuitState.to_dict` (the pattern a shared store can
use), all through the `Circuit` protocol. The Redis circuit runs the same machine in
`test_redis_circuit`."""

from __future__ import annotations

from buttress._state.circuit import CircuitPolicy
from buttress.stores.base import Circuit
from buttress.stores.memory import MemoryCircuit
from circuit_contract import SavedCircuit, make_circuit_machine


def test_saved_circuit_implements_the_protocol() -> None:
    assert isinstance(SavedCircuit(CircuitPolicy()), Circuit)


TestMemoryCircuitBatched = make_circuit_machine(MemoryCircuit).TestCase
TestMemoryCircuitLocked = make_circuit_machine(
    MemoryCircuit, use_fast_path=False, max_examples=40
).TestCase
TestSavedCircuit = make_circuit_machine(SavedCircuit, max_examples=40).TestCase
# the time-window scenarios the Redis circuit runs too (tests/test_redis_circuit.py)
TestMemoryCircuitTimeWindow = make_circuit_machine(
    MemoryCircuit, use_fast_path=False, windows="time", max_examples=60
).TestCase
