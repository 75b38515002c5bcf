"""A workflow that imports a system of record (tests/test_strict_sandbox.py):
workflow code reaches systems/ only through activities."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from systems.erp import DocumentRegister


@workflow.defn(name="strict_sandbox_reads_the_erp")
class ReadsTheErp:
    @workflow.run
    async def run(self) -> str:
        return DocumentRegister.__name__
