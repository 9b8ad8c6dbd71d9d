"""A HostFact/WeFact API v2 simulator: several administrations in one aiohttp process, with faults and hooks.

Used by sandbox mode, benchmarks and tests::

    source = SimAdministration("source", "hostfact", "key", hooks_url=url, hook_secret="whsec_...")
    target = SimAdministration("target", "wefact", "key")
    source.add_debtor(CompanyName="Company X")                       # seeding runs the API's own add
    async with run_simulator([source, target]) as sim:               # free port
        sim.api_url("source")                                        # http://127.0.0.1:PORT/source/api/v2/
        source.faults.inject("http_503", action="partpayment", times=2)
        ...
        await sim.drain_hooks()
        source.count_calls("invoice", "partpayment"), source.hooks_fired, source.invoice_by_code("F0001")

Control routes per administration under ``/{name}/_sim/``: ``faults`` (GET, POST a rule or a list, DELETE),
``state``, ``calls`` (GET, DELETE), ``hooks`` (GET), ``hooks/drain`` (POST), ``reset`` (POST).
Standalone: ``python -m tasks.simulator --help``.
"""

from tasks.simulator.administration import SimAdministration
from tasks.simulator.app import create_app
from tasks.simulator.calls import CallRecord
from tasks.simulator.envelope import ApiFailure
from tasks.simulator.faults import FAULT_KINDS, FaultKind, FaultPlan, FaultRule
from tasks.simulator.hooks import HookDelivery, HookMode
from tasks.simulator.runner import RunningSimulator, run_simulator

__all__ = [
    "FAULT_KINDS",
    "ApiFailure",
    "CallRecord",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "HookDelivery",
    "HookMode",
    "RunningSimulator",
    "SimAdministration",
    "create_app",
    "run_simulator",
]
