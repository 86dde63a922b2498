-- Each refund of a payment and where it stands at the provider: requested when the provider
-- accepted it for processing, then succeeded, abnormal (the money could not reach the payer's
-- account; WeChat Pay's REFUND.ABNORMAL) or closed, as its notifications say. refund_no is the
-- id the provider knows it by (WeChat Pay's out_refund_no, Alipay's out_request_no).
CREATE TABLE payment_refunds (
    payment_id TEXT NOT NULL,
    refund_no TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (payment_id, refund_no)
);
