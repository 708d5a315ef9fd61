-- +goose Up
-- A prediction is made on every closed candle, by the champion or the
-- no-change forecast (model), with the volatility model's sigma and every
-- horizon's forecast and intervals (forecasts, the event's own JSON).
ALTER TABLE predictions
    ADD COLUMN model     text,
    ADD COLUMN sigma     double precision,
    ADD COLUMN forecasts jsonb;

-- +goose Down
ALTER TABLE predictions DROP COLUMN model, DROP COLUMN sigma, DROP COLUMN forecasts;
