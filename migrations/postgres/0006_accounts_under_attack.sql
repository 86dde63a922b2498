-- Throttles every replica shares (auth::throttle): one row per key (an account, an address, or
-- the pair of them) holding its theoretical arrival time (GCRA, in ms). An attempt moves it one
-- interval on; an attempt that would move it beyond `burst` intervals ahead of now is refused,
-- all in one statement per key, so a concurrent burst cannot slip past the limit.
CREATE TABLE throttles (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
CREATE INDEX throttles_tat ON throttles (tat);

-- Usernames are unique whatever their case (USERA and usera are one account), as emails are:
-- the key is the username lower-cased (Unicode), set by the gate on every write.
ALTER TABLE users ADD COLUMN username_key TEXT;
UPDATE users SET username_key = lower(username);
CREATE UNIQUE INDEX users_username_folded ON users (username_key);
