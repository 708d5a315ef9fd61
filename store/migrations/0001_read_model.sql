-- +goose Up
-- The read model projected from the streams and buckets. Every table keeps
-- the stream sequence (or KV revision) of the event it holds, so that an
-- older redelivery never overwrites a newer value: the projection converges
-- to the newest event per key whatever the order of delivery.

CREATE TABLE candles (
    symbol      text             NOT NULL,
    interval    integer          NOT NULL, -- minutes, as streams.Interval
    start       timestamptz      NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    vwap        double precision NOT NULL,
    volume      double precision NOT NULL,
    trades      bigint           NOT NULL,
    quality     text             NOT NULL,
    stream_seq  bigint           NOT NULL,
    -- The primary key's index serves range reads of one series by time.
    PRIMARY KEY (symbol, interval, start)
);

CREATE TABLE predictions (
    symbol          text             NOT NULL,
    interval        integer          NOT NULL,
    start           timestamptz      NOT NULL,
    target          timestamptz      NOT NULL,
    horizon         integer          NOT NULL,
    model_id        text             NOT NULL,
    close           double precision NOT NULL,
    log_return      double precision NOT NULL,
    predicted_close double precision NOT NULL,
    lower_bound     double precision NOT NULL,
    upper_bound     double precision NOT NULL,
    candle_seq      bigint           NOT NULL,
    window_quality  jsonb,
    stream_seq      bigint           NOT NULL,
    PRIMARY KEY (symbol, interval, start)
);

CREATE INDEX predictions_model ON predictions (model_id, start);

-- A prediction is scored once its target candle is stored; a view keeps the
-- score consistent with whatever candle revision the table holds.
CREATE VIEW prediction_scores AS
SELECT p.symbol, p.interval, p.start, p.target, p.model_id,
       p.predicted_close, c.close AS actual_close,
       c.close - p.predicted_close AS error,
       abs(c.close - p.predicted_close) AS abs_error,
       sign(c.close - p.close) = sign(p.predicted_close - p.close) AS direction_hit,
       c.close BETWEEN p.lower_bound AND p.upper_bound AS within_band
FROM predictions p
JOIN candles c ON c.symbol = p.symbol AND c.interval = p.interval AND c.start = p.target;

CREATE TABLE model_evaluations (
    model_id     text        PRIMARY KEY,
    symbol       text        NOT NULL,
    interval     integer     NOT NULL,
    horizon      integer     NOT NULL,
    features     jsonb       NOT NULL,
    coefficients jsonb       NOT NULL,
    residual_std double precision NOT NULL,
    train_from   timestamptz,
    train_to     timestamptz,
    test_from    timestamptz,
    test_to      timestamptz,
    metrics      jsonb       NOT NULL,
    champion     boolean     NOT NULL,
    decision     text        NOT NULL,
    artifact     text        NOT NULL,
    created_at   timestamptz,
    kv_revision  bigint      NOT NULL
);

CREATE INDEX model_evaluations_series ON model_evaluations (symbol, interval, created_at);

CREATE TABLE champions (
    symbol      text    NOT NULL,
    interval    integer NOT NULL,
    model_id    text    NOT NULL,
    kv_revision bigint  NOT NULL,
    PRIMARY KEY (symbol, interval)
);

CREATE TABLE alerts (
    id         text             PRIMARY KEY,
    rule_id    text             NOT NULL,
    symbol     text             NOT NULL,
    interval   integer          NOT NULL,
    kind       text             NOT NULL,
    message    text             NOT NULL,
    value      double precision NOT NULL,
    threshold  double precision NOT NULL,
    at         timestamptz      NOT NULL,
    stream_seq bigint           NOT NULL
);

CREATE INDEX alerts_symbol_at ON alerts (symbol, at);

CREATE TABLE assets (
    symbol      text        PRIMARY KEY,
    added_by    text        NOT NULL,
    added_at    timestamptz,
    kraken_key  text        NOT NULL,
    kv_revision bigint      NOT NULL
);

-- Password hashes never leave the users bucket.
CREATE TABLE users (
    username    text        PRIMARY KEY,
    email       text        NOT NULL,
    full_name   text        NOT NULL,
    role        text        NOT NULL,
    disabled    boolean     NOT NULL,
    created_at  timestamptz,
    updated_at  timestamptz,
    kv_revision bigint      NOT NULL
);

CREATE TABLE audit_events (
    id         text        PRIMARY KEY,
    action     text        NOT NULL,
    actor      text        NOT NULL,
    target     text        NOT NULL,
    outcome    text        NOT NULL,
    remote     text        NOT NULL,
    detail     text        NOT NULL,
    at         timestamptz NOT NULL,
    stream_seq bigint      NOT NULL
);

CREATE INDEX audit_events_at ON audit_events (at);
