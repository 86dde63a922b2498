-- Subscriptions that are fair to the payer (billing::changes): renewals extend the paid span,
-- upgrades credit its unused part, downgrades wait for it to end.
--
-- paid_value_fen: the list value of the span [current_period_start, current_period_end) the
-- user has paid for (the plan's price per cycle bought); an upgrade credits the unused share of
-- it. 0 for the free plan and for subscriptions no one paid for.
ALTER TABLE user_subscriptions ADD COLUMN paid_value_fen BIGINT NOT NULL DEFAULT 0;
UPDATE user_subscriptions SET paid_value_fen = COALESCE(
    (SELECT price_fen FROM subscription_plans p WHERE p.id = user_subscriptions.plan_id), 0)
    WHERE status IN ('active', 'cancelled');
-- A paid change that begins when the running period ends waits as status 'scheduled', its
-- period already set; the rollover activates the earliest one due.
CREATE INDEX scheduled_subscriptions ON user_subscriptions (user_id, current_period_start)
    WHERE status = 'scheduled';

-- The quote an order was priced by, shown before the payment and kept on its record:
--   change_kind           new | renew | upgrade | downgrade
--   list_price_fen        the plan's price; amount_fen = list_price_fen - credit_fen
--   credit_fen            the unused part of the running period, credited on an upgrade
--   from_subscription_id  the running subscription the quote was made against, and
--   from_period_end       its end then (the quote holds only while both are unchanged)
--   effect_start/_end     the span the payment bought, once applied (refunds take it back)
ALTER TABLE payment_transactions ADD COLUMN change_kind TEXT NOT NULL DEFAULT 'new';
ALTER TABLE payment_transactions ADD COLUMN list_price_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payment_transactions ADD COLUMN credit_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payment_transactions ADD COLUMN from_subscription_id TEXT;
ALTER TABLE payment_transactions ADD COLUMN from_period_end BIGINT;
ALTER TABLE payment_transactions ADD COLUMN effect_start BIGINT;
ALTER TABLE payment_transactions ADD COLUMN effect_end BIGINT;
UPDATE payment_transactions SET list_price_fen = amount_fen;
