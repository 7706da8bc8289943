// fetchWithL402 of @getalby/lightning-tools against coffer's L402 paywall,
// paying through a coffer wallet: the wallet's payInvoice is
// POST /v1/payments with the agent's key. Prints one JSON line.
import { fetchWithL402 } from "@getalby/lightning-tools/402/l402";

const gateway = process.env.COFFER_URL;
const agentKey = process.env.COFFER_AGENT_KEY;
const url = process.env.TARGET_URL;

const wallet = {
  async payInvoice({ invoice }) {
    const response = await fetch(`${gateway}/v1/payments`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${agentKey}`,
        "content-type": "application/json",
        // The same invoice is never paid twice, even if this is retried.
        "idempotency-key": `l402-${invoice.slice(-32)}`,
      },
      body: JSON.stringify({ bolt11: invoice, purpose: url }),
    });
    const body = await response.json();
    if (response.status !== 200) {
      throw new Error(`coffer refused the payment: ${response.status} ${JSON.stringify(body)}`);
    }
    return { preimage: body.preimage, fees_paid: body.fee_msat };
  },
};

const describe = async (response) => ({
  status: response.status,
  body: await response.text(),
  paid: response.payment?.paid ?? false,
  amount_sat: response.payment?.amountSat ?? 0,
});

const firstResponse = await fetchWithL402(url, {}, { wallet });
const credentials = firstResponse.payment?.credentials;
const first = await describe(firstResponse);
// The credential of the first payment authorizes the next request: no new payment.
const again = await describe(await fetchWithL402(url, {}, { wallet, credentials }));
console.log(JSON.stringify({ first, again }));
