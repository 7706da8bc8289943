//! What the bridge reads and writes in a chat, with no I/O: the commands
//! people type, the data its buttons carry, and how a room's message, a
//! card, an approval or an alert reads in a messenger.

use super::{BUTTON_DATA_MAX_BYTES, Button, Outbound};
use base64::Engine as _;
use coffer_client::Message;

/// The longest memo `/request` takes (the room's own bounds apply after).
const MEMO_LEN_MAX_BYTES: usize = 256;
/// The most satoshis `/request` asks for: a chat is for small payments,
/// and the amount is checked again by the gateway in msat.
const REQUEST_SAT_MAX: u64 = 21_000_000 * 100_000_000;
/// Pixels per QR module in a card's image.
const QR_SCALE_PX: u32 = 6;

/// A command typed in a chat (`/name` on Telegram, `!name` on Matrix; both
/// are accepted everywhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Link(String),
    Unlink,
    Balance,
    Request {
        amount_sat: u64,
        memo: String,
    },
    /// Pays the card the message replies to.
    Pay,
    Approve(String),
    Deny(String),
    Freeze(String),
    Unfreeze(String),
    Halt(bool),
    /// A command with the wrong arguments: how to use it.
    Usage(&'static str),
}

/// Reads a command; `None` for text that is not one (a plain message).
pub fn command(text: &str) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/').or_else(|| text.strip_prefix('!'))?;
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    // Telegram addresses commands to a bot in groups: `/pay@coffer_bot`.
    let name = name.split_once('@').map_or(name, |(n, _)| n).to_ascii_lowercase();
    let args = args.trim();
    let one = |usage| match args.split_whitespace().collect::<Vec<_>>()[..] {
        [arg] => Ok(arg.to_owned()),
        _ => Err(Command::Usage(usage)),
    };
    let parsed = match name.as_str() {
        "start" | "help" => Ok(Command::Help),
        "link" => one("/link CODE (ask coffer for a code: POST /v1/agents/{id}/link-codes)").map(Command::Link),
        "unlink" => Ok(Command::Unlink),
        "balance" => Ok(Command::Balance),
        "request" => request(args),
        "pay" => Ok(Command::Pay),
        "approve" => one("/approve APPROVAL_ID").map(Command::Approve),
        "deny" => one("/deny APPROVAL_ID").map(Command::Deny),
        "freeze" => one("/freeze AGENT_ID").map(Command::Freeze),
        "unfreeze" => one("/unfreeze AGENT_ID").map(Command::Unfreeze),
        "halt" => match args {
            "" | "on" => Ok(Command::Halt(true)),
            "off" => Ok(Command::Halt(false)),
            _ => Err(Command::Usage("/halt, or /halt off")),
        },
        _ => return None,
    };
    Some(parsed.unwrap_or_else(|usage| usage))
}

fn request(args: &str) -> Result<Command, Command> {
    const USAGE: Command = Command::Usage("/request AMOUNT_SAT MEMO");
    let (amount, memo) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let amount_sat = amount.parse::<u64>().map_err(|_| USAGE)?;
    let memo = memo.trim();
    if amount_sat == 0 || amount_sat > REQUEST_SAT_MAX || memo.is_empty() || memo.len() > MEMO_LEN_MAX_BYTES {
        return Err(USAGE);
    }
    Ok(Command::Request { amount_sat, memo: memo.to_owned() })
}

/// What a button does; its data carries a tag that binds it to the card or
/// approval and to the chat (see [`tagged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pay the room's message `message_id`.
    Pay { message_id: i64 },
    /// Decide a held payment.
    Decide { approval_id: String, approve: bool },
}

impl Action {
    /// The text the tag is computed over: the action and the chat (a
    /// button copied to another chat or card does not verify).
    pub fn tagged_text(&self, messenger: &str, chat: &str) -> String {
        match self {
            Action::Pay { message_id } => format!("{messenger}\0{chat}\0pay\0{message_id}"),
            Action::Decide { approval_id, approve } => format!("{messenger}\0{chat}\0decide\0{approval_id}\0{approve}"),
        }
    }

    /// The button's data: `p:ID:TAG` or `a:ID:y|n:TAG`, the tag in
    /// URL-safe base64 (16 characters).
    pub fn data(&self, tag: &[u8; 12]) -> String {
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        match self {
            Action::Pay { message_id } => format!("p:{message_id}:{tag}"),
            Action::Decide { approval_id, approve } => {
                format!("a:{approval_id}:{}:{tag}", if *approve { "y" } else { "n" })
            }
        }
    }

    /// Reads a button's data into the action and its tag; `None` for data
    /// no button of the bridge carries.
    pub fn parse(data: &str) -> Option<(Action, [u8; 12])> {
        if data.len() > BUTTON_DATA_MAX_BYTES {
            return None;
        }
        let parts: Vec<&str> = data.split(':').collect();
        let (action, tag) = match parts[..] {
            ["p", id, tag] => (Action::Pay { message_id: id.parse().ok().filter(|id: &i64| *id > 0)? }, tag),
            ["a", id, yes, tag] if !id.is_empty() && (yes == "y" || yes == "n") => {
                (Action::Decide { approval_id: id.to_owned(), approve: yes == "y" }, tag)
            }
            _ => return None,
        };
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        Some((action, tag.try_into().ok()?))
    }
}

/// A button with its tagged data (`tag` computed by the gateway over
/// [`Action::tagged_text`]).
pub fn button(label: &str, action: &Action, tag: &[u8; 12]) -> Button {
    let data = action.data(tag);
    debug_assert!(data.len() <= BUTTON_DATA_MAX_BYTES, "button data over Telegram's 64 bytes: {data}");
    Button { label: label.to_owned(), data }
}

/// A room's message as the chat shows it: a line of text, or a payment
/// request's card with its QR code and, while it is open, a Pay button.
pub fn message(m: &Message, pay: Option<Button>) -> Outbound {
    let Some(invoice) = &m.invoice else {
        return Outbound { text: format!("{}: {}", m.sender, m.text), image_png: None, buttons: Vec::new() };
    };
    let mut lines = vec![
        format!("⚡ {} asks {} for {}", m.sender, sat(invoice.amount_msat), invoice.memo),
        format!("Status: {}", invoice.state),
    ];
    let open = invoice.state == "open";
    if open {
        lines.push(format!("Expires {}", invoice.expires_at));
        lines.push("Pay with the button, by replying /pay (!pay), or from any Lightning wallet:".to_owned());
        lines.push(invoice.bolt11.clone());
    }
    if let Some(receipt) = &m.receipt {
        lines.push(format!("Paid by {} at {}", receipt.payer, receipt.paid_at));
        lines.push(format!("Preimage (proof of payment): {}", receipt.preimage));
    }
    if let Some(payment_id) = &invoice.payment_id {
        lines.push(format!("Receipt: /v1/payments/{payment_id}/receipt"));
    }
    Outbound { text: lines.join("\n"), image_png: None, buttons: pay.filter(|_| open).into_iter().collect() }
}

/// A card's QR code, sent with it when first posted.
pub fn qr_png(bolt11: &str) -> Option<Vec<u8>> {
    crate::http::qr::png(bolt11, QR_SCALE_PX).ok()
}

/// A held payment, for the operator to decide.
pub fn approval(a: &coffer_client::Approval, approve: Button, deny: Button) -> Outbound {
    let to = a.payee_agent_id.as_deref().unwrap_or("another node");
    let text = format!(
        "✋ Approval needed: {} wants to pay {} to {} for \"{}\"\n/approve {} or /deny {}",
        a.agent_id,
        sat(a.amount_msat),
        to,
        a.purpose,
        a.id,
        a.id
    );
    Outbound { text, image_png: None, buttons: vec![approve, deny] }
}

/// An alert for the operator: a breaker trip, the kill switch, a freeze, a
/// budget nearly spent.
pub fn alert(kind: &str, data: &serde_json::Value) -> Option<Outbound> {
    let field = |name: &str| data.get(name).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let text = match kind {
        "breaker.tripped" => {
            format!("🚨 Breaker tripped: {} ({}): {}", field("agent_id"), field("code"), field("message"))
        }
        "breaker.halted" if data.get("halted").and_then(|v| v.as_bool()) == Some(true) => {
            "🛑 The gateway is halted: no payment leaves a wallet until /halt off.".to_owned()
        }
        "breaker.halted" => "✅ The gateway runs again.".to_owned(),
        "agent.frozen" => format!("🧊 {} is frozen: {}", field("agent_id"), field("reason")),
        "budget.warning" => {
            let amount = |name: &str| sat(data.get(name).and_then(|v| v.as_u64()).unwrap_or(0));
            let percent = data.get("threshold_percent").and_then(|v| v.as_u64()).unwrap_or(0);
            format!(
                "⚠️ {} has spent {percent}% of its {} budget: {} of {}",
                field("agent_id"),
                field("budget"),
                amount("spent_msat"),
                amount("limit_msat")
            )
        }
        _ => return None,
    };
    Some(Outbound { text, image_png: None, buttons: Vec::new() })
}

/// `1,500 sat`, or `1,500.5 sat` for amounts that are not whole satoshis.
pub fn sat(amount_msat: u64) -> String {
    let whole = (amount_msat / 1_000).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match amount_msat % 1_000 {
        0 => format!("{grouped} sat"),
        rest => format!("{grouped}.{} sat", format!("{rest:03}").trim_end_matches('0')),
    }
}

/// How to use the bot, for `/help` and for whoever is not linked.
pub const HELP: &str = "coffer bridges this chat to a room of payments between agents.\n\
/link CODE: act as an agent (the agent asks coffer for a code)\n\
/unlink: stop acting as it\n\
/balance: the agent's balance\n\
/request AMOUNT_SAT MEMO: ask for a payment in this chat\n\
/pay: in reply to a payment request, pay it (or press its Pay button)\n\
Operator: /approve ID, /deny ID, /freeze AGENT, /unfreeze AGENT, /halt, /halt off";

/// What an unlinked user who pressed Pay is told.
pub const NOT_LINKED: &str = "You are not linked to an agent, so nothing was paid. Ask the agent's owner for a \
     link code and send /link CODE to this bot; or pay the invoice from any Lightning wallet.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_either_prefix_and_a_bot_name() {
        assert_eq!(command("/link AB12"), Some(Command::Link("AB12".into())));
        assert_eq!(command("!pay"), Some(Command::Pay));
        assert_eq!(command("/pay@coffer_bot"), Some(Command::Pay));
        assert_eq!(
            command("/request 15 the route to Lyon"),
            Some(Command::Request { amount_sat: 15, memo: "the route to Lyon".into() })
        );
        assert_eq!(command("/halt off"), Some(Command::Halt(false)));
        assert_eq!(command("/halt"), Some(Command::Halt(true)));
        assert!(matches!(command("/request 0 x"), Some(Command::Usage(_))));
        assert!(matches!(command("/request ten x"), Some(Command::Usage(_))));
        assert!(matches!(command("/request 10"), Some(Command::Usage(_))));
        assert!(matches!(command("/link"), Some(Command::Link(_)) | Some(Command::Usage(_))));
        assert_eq!(command("hello"), None);
        assert_eq!(command("/unknown"), None);
    }

    #[test]
    fn button_data_round_trips_and_fits_telegram() {
        let tag = [7u8; 12];
        for action in [
            Action::Pay { message_id: i64::MAX },
            Action::Decide { approval_id: "apr_01HZZZZZZZZZZZZZZZZZZZZZZZ".into(), approve: false },
        ] {
            let data = action.data(&tag);
            assert!(data.len() <= BUTTON_DATA_MAX_BYTES, "{data}");
            assert_eq!(Action::parse(&data), Some((action, tag)));
        }
        assert_eq!(Action::parse("p:0:AAAA"), None);
        assert_eq!(Action::parse("p:1"), None);
        assert_eq!(Action::parse("x:1:AAAAAAAAAAAAAAAA"), None);
        assert_eq!(Action::parse("p:1:short"), None);
    }

    #[test]
    fn tags_bind_the_chat() {
        let pay = Action::Pay { message_id: 3 };
        assert_ne!(pay.tagged_text("telegram", "1"), pay.tagged_text("telegram", "2"));
        assert_ne!(pay.tagged_text("telegram", "1"), Action::Pay { message_id: 4 }.tagged_text("telegram", "1"));
    }

    #[test]
    fn a_budget_warning_reads_as_an_alert() {
        let data = serde_json::json!({
            "agent_id": "agt_a", "budget": "day", "threshold_percent": 80, "spent_msat": 8_000, "limit_msat": 10_000,
        });
        let warned = alert("budget.warning", &data).expect("an alert");
        assert_eq!(warned.text, "⚠️ agt_a has spent 80% of its day budget: 8 sat of 10 sat");
        assert!(alert("payment.succeeded", &data).is_none());
    }

    #[test]
    fn amounts_read_in_sat() {
        assert_eq!(sat(15_000), "15 sat");
        assert_eq!(sat(1_500_500), "1,500.5 sat");
        assert_eq!(sat(1_234_567_000), "1,234,567 sat");
        assert_eq!(sat(1), "0.001 sat");
    }
}
