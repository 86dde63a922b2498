//! What paying for a plan does to the subscription that is running: the rules a clinic is
//! charged by, kept apart from the store that writes them and the API that shows them.
//!
//! | The payer has                    | and pays for       | change    | takes effect                         |
//! |----------------------------------|--------------------|-----------|--------------------------------------|
//! | nothing, the free plan, or ended | a paid plan        | new       | now, for one cycle                   |
//! | a paid plan                      | the same plan      | renew     | at its end: one more cycle           |
//! | a paid plan                      | a dearer plan      | upgrade   | now; the unused part is credited     |
//! | a paid plan                      | a cheaper plan     | downgrade | when the paid period ends            |
//!
//! Moving to the free plan is a cancellation: the paid plan runs to its end, then the free one
//! takes over. An order is priced by a [`Quote`] when it is created (what the payer sees
//! before paying); when the payment arrives, [`on_paid`] applies the quote if the running
//! subscription is still the one it was made against, and otherwise queues the span the money
//! buys after whatever is already paid for, so no payment is lost and no credit is used twice
//! (Stripe's proration, without a stored balance: a credit can only lower a price).

use super::periods::{cycle_at, extend_by_cycle, months_of, period_end};
use crate::formats::money::Fen;
use crate::store::{PaidContext, PaymentRow, PeriodEffect, Plan, SubscriptionRow};

/// The kinds of change an order makes, as stored on it and shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    New,
    Renew,
    Upgrade,
    Downgrade,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::New => "new",
            ChangeKind::Renew => "renew",
            ChangeKind::Upgrade => "upgrade",
            ChangeKind::Downgrade => "downgrade",
        }
    }

    /// The stored spelling; anything else (orders from before changes were recorded) is `new`.
    pub fn parse(s: &str) -> ChangeKind {
        match s {
            "renew" => ChangeKind::Renew,
            "upgrade" => ChangeKind::Upgrade,
            "downgrade" => ChangeKind::Downgrade,
            _ => ChangeKind::New,
        }
    }
}

/// The running subscription a quote is made against, with what the store knows of its plan.
pub struct Running<'a> {
    pub sub: &'a SubscriptionRow,
    pub plan_price_fen: Fen,
    pub plan_cycle: &'a str,
}

/// How an order is priced, before it is paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub kind: ChangeKind,
    /// The plan's price for one cycle.
    pub list_price_fen: Fen,
    /// The unused part of the running period (upgrades only), rounded up: in the payer's favour.
    pub credit_fen: Fen,
    /// What the payer pays: `list_price_fen - credit_fen`.
    pub amount_fen: Fen,
    /// The running subscription and its end, when the quote depends on them.
    pub from: Option<(String, i64)>,
    /// When the paid plan takes effect (or, for a renewal, when the added cycle begins).
    pub starts_at: i64,
}

/// Why an order cannot be priced; the text is for the payer (422).
#[derive(Debug)]
pub struct Refused(pub String);

/// Prices an order for `target` given the running subscription (`None` when nothing paid is
/// running or it has ended) and the changes already scheduled after it.
pub fn quote(
    running: Option<Running<'_>>,
    scheduled: &[(SubscriptionRow, String)],
    target: &Plan,
    now: i64,
) -> Result<Quote, Refused> {
    let price = target.row.price_fen;
    let new = Quote {
        kind: ChangeKind::New,
        list_price_fen: price,
        credit_fen: Fen::ZERO,
        amount_fen: price,
        from: None,
        starts_at: now,
    };
    // A change already paid for comes first: anything bought now would start before it, or
    // on top of it.
    if let Some((s, name)) = scheduled.first() {
        return Err(Refused(format!(
            "已安排变更: a change to {name} is already paid for and begins {}; choose again once it has begun",
            date(s.current_period_start.unwrap_or(now))
        )));
    }
    let Some(Running {
        sub,
        plan_price_fen,
        plan_cycle,
    }) = running
    else {
        return Ok(new);
    };
    let (start, end) = span(sub);
    if end <= now {
        return Ok(new);
    }
    let same = sub.plan_id == target.row.id;
    if !same && plan_price_fen.is_zero() {
        return Ok(new);
    }
    let from = Some((sub.id.clone(), end));
    if same {
        return Ok(Quote {
            kind: ChangeKind::Renew,
            from,
            starts_at: end,
            ..new
        });
    }
    // Dearer or cheaper by the month: a yearly plan is not "dearer" than a monthly one for
    // costing more at once.
    let target_monthly = price.get() as i128 * months_of(plan_cycle) as i128;
    let running_monthly =
        plan_price_fen.get() as i128 * months_of(&target.row.billing_cycle) as i128;
    if target_monthly <= running_monthly {
        if end > period_end(now, &target.row.billing_cycle) {
            return Err(Refused(format!(
                "your current plan runs to {}: a cheaper plan can be bought within one of its cycles of that date",
                date(end)
            )));
        }
        return Ok(Quote {
            kind: ChangeKind::Downgrade,
            from,
            starts_at: end,
            ..new
        });
    }
    let credit = credit_fen(sub.paid_value_fen, start, end, now);
    if credit >= price {
        return Err(Refused(format!(
            "the unused part of your current plan ({} yuan) is worth more than {} costs; choose it when the current period ends",
            credit, target.row.name
        )));
    }
    Ok(Quote {
        kind: ChangeKind::Upgrade,
        credit_fen: credit,
        amount_fen: price - credit,
        from,
        ..new
    })
}

/// A day as people read it in a message: 2026-12-31.
fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The unused share of `value` paid for [`start`, `end`) at `now`, rounded up.
pub fn credit_fen(value: Fen, start: i64, end: i64, now: i64) -> Fen {
    let total = (end - start).max(1) as i128;
    let unused = (end - now).clamp(0, end - start) as i128;
    let v = value.get().max(0) as i128;
    Fen::new(((v * unused + total - 1) / total) as i64)
}

fn span(sub: &SubscriptionRow) -> (i64, i64) {
    let end = sub.current_period_end.unwrap_or(0);
    (sub.current_period_start.unwrap_or(end), end)
}

/// What a verified payment of `order` does, decided inside the store's transaction against the
/// subscriptions as they are then. Returns the effect and the list value it adds.
pub fn on_paid(ctx: &PaidContext<'_>, cycle: &str) -> (PeriodEffect, Fen) {
    let order: &PaymentRow = ctx.order;
    let now = ctx.now;
    let running = ctx
        .running
        .filter(|r| r.current_period_end.unwrap_or(0) > now);
    let paid_running = running.filter(|_| !ctx.running_plan_price_fen.is_zero());
    let as_quoted = running.is_some_and(|r| {
        order.from_subscription_id.as_deref() == Some(r.id.as_str())
            && order.from_period_end == r.current_period_end
    }) && ctx.last_scheduled_end.is_none();
    let value = order.list_price_fen;
    match ChangeKind::parse(&order.change_kind) {
        ChangeKind::Renew
            if ctx.last_scheduled_end.is_none()
                && running.is_some_and(|r| r.plan_id == order.plan_id) =>
        {
            let r = running.expect("checked above");
            let (start, end) = span(r);
            let counted_from = r.cycle_anchor.unwrap_or(start);
            let (end, anchor) = extend_by_cycle(counted_from, end, cycle);
            let anchor = (anchor != counted_from).then_some(anchor);
            (PeriodEffect::Extend { end, anchor }, value)
        }
        ChangeKind::Upgrade if as_quoted => (start_now(now, now_end(now, cycle), cycle), value),
        ChangeKind::Downgrade if as_quoted => {
            let start = running.and_then(|r| r.current_period_end).unwrap_or(now);
            (
                PeriodEffect::Schedule {
                    start,
                    end: period_end(start, cycle),
                },
                value,
            )
        }
        ChangeKind::New if paid_running.is_none() && ctx.last_scheduled_end.is_none() => {
            (start_now(now, now_end(now, cycle), cycle), value)
        }
        // The quote no longer holds (the running subscription changed since, or another change
        // was paid first): the money buys its share of a cycle, after what is already paid for.
        _ => {
            let start = ctx
                .last_scheduled_end
                .unwrap_or(now)
                .max(
                    paid_running
                        .and_then(|r| r.current_period_end)
                        .unwrap_or(now),
                )
                .max(now);
            let len = prorated_len(start, cycle, order.amount_fen, order.list_price_fen);
            if start == now {
                (start_now(now, now + len, cycle), order.amount_fen)
            } else {
                (
                    PeriodEffect::Schedule {
                        start,
                        end: start + len,
                    },
                    order.amount_fen,
                )
            }
        }
    }
}

fn now_end(now: i64, cycle: &str) -> i64 {
    period_end(now, cycle)
}

fn start_now(now: i64, end: i64, cycle: &str) -> PeriodEffect {
    PeriodEffect::StartNow {
        end,
        cycle_end: cycle_at(now, end, cycle, now).1,
    }
}

/// The length of the share of one cycle from `start` that `amount` of `list_price` buys.
fn prorated_len(start: i64, cycle: &str, amount: Fen, list_price: Fen) -> i64 {
    let (amount_fen, list_price_fen) = (amount.get(), list_price.get());
    let whole = (period_end(start, cycle) - start) as i128;
    if list_price_fen <= 0 || amount_fen >= list_price_fen {
        return whole as i64;
    }
    (whole * amount_fen.max(0) as i128 / list_price_fen as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PlanRow;

    const MONTH: i64 = 30 * 24 * 3600 * 1000;

    fn plan(id: &str, price_fen: i64, cycle: &str) -> Plan {
        Plan {
            row: PlanRow {
                id: id.into(),
                name: id.into(),
                description: String::new(),
                price_fen: Fen::new(price_fen),
                currency: "CNY".into(),
                billing_cycle: cycle.into(),
                features: "{}".into(),
                is_active: true,
                is_default: false,
                created_at: 0,
                updated_at: 0,
            },
            quotas: Vec::new(),
        }
    }

    fn sub(plan_id: &str, start: i64, end: i64, paid: i64) -> SubscriptionRow {
        SubscriptionRow {
            id: format!("sub-{plan_id}"),
            user_id: crate::formats::ids::UserId::mint(),
            plan_id: plan_id.into(),
            status: crate::store::SubscriptionStatus::Active,
            current_period_start: Some(start),
            current_period_end: Some(end),
            auto_renew: true,
            created_at: start,
            updated_at: start,
            paid_value_fen: Fen::new(paid),
            cycle_anchor: None,
        }
    }

    #[test]
    fn dearer_and_cheaper_are_by_the_month() {
        let now = 1_000 * MONTH;
        let monthly = plan("pro-monthly", 19_900, "monthly");
        let running = sub("basic-yearly", now - MONTH, now + 11 * MONTH, 99_000);
        let r = || Running {
            sub: &running,
            plan_price_fen: Fen::new(99_000),
            plan_cycle: "yearly",
        };
        // 199.00 a month is dearer than 990.00 a year (82.50 a month): an upgrade, whose
        // credit (11 months of 990.00) is worth more than its price: refused, not scheduled.
        let e = quote(Some(r()), &[], &monthly, now).unwrap_err();
        assert!(e.0.contains("worth more"), "{}", e.0);
        // A cheaper monthly plan 11 months before the yearly one ends: refused, not sold now
        // for a month that starts next year.
        let cheap = plan("lite-monthly", 1_000, "monthly");
        let e = quote(Some(r()), &[], &cheap, now).unwrap_err();
        assert!(e.0.contains("cheaper plan"), "{}", e.0);
        // Within one cycle of the end, it is a downgrade that starts at the end.
        let ending = sub("basic-yearly", now - 11 * MONTH, now + MONTH / 2, 99_000);
        let q = quote(
            Some(Running {
                sub: &ending,
                plan_price_fen: Fen::new(99_000),
                plan_cycle: "yearly",
            }),
            &[],
            &cheap,
            now,
        )
        .unwrap();
        assert_eq!(
            (q.kind, q.starts_at),
            (ChangeKind::Downgrade, now + MONTH / 2)
        );
    }

    #[test]
    fn a_scheduled_change_comes_first_even_on_the_free_plan() {
        let now = 1_000 * MONTH;
        let free = sub("free", now - MONTH / 2, now + MONTH / 2, 0);
        let waiting = (
            sub("pro", now + MONTH, now + 2 * MONTH, 9_900),
            "Pro".to_string(),
        );
        let e = quote(
            Some(Running {
                sub: &free,
                plan_price_fen: Fen::new(0),
                plan_cycle: "monthly",
            }),
            &[waiting],
            &plan("pro", 9_900, "monthly"),
            now,
        )
        .unwrap_err();
        assert!(e.0.contains("Pro"), "{}", e.0);
    }

    #[test]
    fn credits_round_in_the_payers_favour() {
        // Half of a 99.00 month: 49.50.
        assert_eq!(credit_fen(Fen::new(9900), 0, 1000, 500), Fen::new(4950));
        // A third of 1.00: 33.33... rounds up to 34 fen.
        assert_eq!(credit_fen(Fen::new(100), 0, 3, 2), Fen::new(34));
        assert_eq!(credit_fen(Fen::new(9900), 0, 1000, 1000), Fen::new(0));
        assert_eq!(credit_fen(Fen::new(9900), 0, 1000, -5), Fen::new(9900));
    }
}
