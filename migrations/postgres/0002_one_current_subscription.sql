-- At most one current (active or cancelled-but-running) subscription per user: two requests
-- that start a user's first period at once cannot both succeed, and "current" is never ambiguous.
CREATE UNIQUE INDEX one_current_subscription ON user_subscriptions(user_id)
    WHERE status IN ('active', 'cancelled');
