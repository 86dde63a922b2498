-- Where a subscription's quota cycles count from, when not from current_period_start: a span
-- renewed from an end that was not a cycle boundary (a prorated span) counts its added cycle
-- from that end (billing::periods::extend_by_cycle). NULL: from current_period_start.
ALTER TABLE user_subscriptions ADD COLUMN cycle_anchor BIGINT;
