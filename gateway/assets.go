package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/ingest/krakenrest"
	"cryptostream/streams"
)

// KrakenPair is one tradable pair from Kraken's AssetPairs.
type KrakenPair struct {
	Symbol  string `json:"symbol"`     // canonical, e.g. BTC/USD
	Key     string `json:"kraken_key"` // REST name, e.g. XXBTZUSD
	Altname string `json:"altname"`
	WSName  string `json:"wsname"`
	Base    string `json:"base"`
	Quote   string `json:"quote"`
	Status  string `json:"status"`
}

// PairSource lists Kraken's pairs.
type PairSource interface {
	AssetPairs(ctx context.Context) ([]KrakenPair, error)
}

// pairCache keeps the last good answer for ttl; when a refresh fails it keeps
// serving the stale list rather than failing every asset request.
type pairCache struct {
	src PairSource
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	pairs   []KrakenPair
	fetched time.Time
}

var errPairsUnavailable = errorf(http.StatusServiceUnavailable, "kraken_unavailable", "Kraken's pair list cannot be fetched")

func (c *pairCache) get(ctx context.Context) ([]KrakenPair, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pairs != nil && c.now().Sub(c.fetched) < c.ttl {
		return c.pairs, c.fetched, nil
	}
	pairs, err := c.src.AssetPairs(ctx)
	if err != nil || len(pairs) == 0 {
		if c.pairs != nil {
			return c.pairs, c.fetched, nil
		}
		if err == nil {
			err = errors.New("empty pair list")
		}
		return nil, time.Time{}, fmt.Errorf("%w: %w", errPairsUnavailable, err)
	}
	slices.SortFunc(pairs, func(a, b KrakenPair) int {
		if a.Symbol < b.Symbol {
			return -1
		}
		if a.Symbol > b.Symbol {
			return 1
		}
		return 0
	})
	c.pairs, c.fetched = pairs, c.now()
	return pairs, c.fetched, nil
}

// KrakenREST adapts the ingester's Kraken REST client to PairSource.
type KrakenREST struct{ Client *krakenrest.Client }

// AssetPairs implements PairSource.
func (k KrakenREST) AssetPairs(ctx context.Context) ([]KrakenPair, error) {
	pairs, err := k.Client.AssetPairs(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: kraken asset pairs: %w", err)
	}
	out := make([]KrakenPair, len(pairs))
	for i, p := range pairs {
		out[i] = KrakenPair{Symbol: p.Symbol, Key: p.Key, Altname: p.Altname, WSName: p.WSName, Base: p.Base, Quote: p.Quote, Status: p.Status}
	}
	return out, nil
}

type assetView struct {
	ID        string    `json:"id"`
	Symbol    string    `json:"symbol"`
	KrakenKey string    `json:"kraken_key"`
	AddedBy   string    `json:"added_by"`
	AddedAt   time.Time `json:"added_at"`
}

func viewAsset(a streams.Asset) assetView {
	return assetView{ID: streams.AssetKey(a.Symbol), Symbol: a.Symbol, KrakenKey: a.KrakenKey, AddedBy: a.AddedBy, AddedAt: a.AddedAt}
}

func (g *Gateway) listAssets(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := g.io(r)
	defer cancel()
	lister, err := g.d.Assets.ListKeys(ctx)
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: list assets: %w", err))
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]assetView, 0, len(keys))
	for _, k := range keys {
		a, _, err := g.getAsset(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			g.fail(w, r, err)
			return
		}
		out = append(out, viewAsset(a))
	}
	// The intervals beside the assets: what the dashboard may offer, since a
	// channel or a preference on any other is refused.
	writeJSON(w, http.StatusOK, map[string]any{"assets": out, "intervals": g.intervalNames()})
}

// intervalNames spells the intervals the system runs, shortest first.
func (g *Gateway) intervalNames() []string {
	ivs := slices.Clone(g.cfg.Hub.Intervals)
	slices.Sort(ivs)
	out := make([]string, len(ivs))
	for i, iv := range ivs {
		out[i] = iv.String()
	}
	return out
}

func (g *Gateway) getAsset(ctx context.Context, key string) (streams.Asset, uint64, error) {
	e, err := g.d.Assets.Get(ctx, key)
	if err != nil {
		return streams.Asset{}, 0, err
	}
	var a streams.Asset
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return streams.Asset{}, 0, fmt.Errorf("gateway: decode asset %s: %w", key, err)
	}
	return a, e.Revision(), nil
}

func (g *Gateway) addAsset(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Symbol string `json:"symbol"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	sym, err := streams.NormalizeSymbol(body.Symbol)
	if err != nil {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_symbol", "symbol must look like BTC/USD or BTC-USD"))
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	pairs, _, err := g.pairs.get(ctx)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	i := slices.IndexFunc(pairs, func(p KrakenPair) bool { return p.Symbol == sym })
	if i < 0 {
		g.fail(w, r, errorf(http.StatusUnprocessableEntity, "unknown_pair", "Kraken does not trade %s", sym))
		return
	}
	actor := claimsOf(r).Subject
	a := streams.Asset{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: sym, AddedBy: actor, AddedAt: g.now().UTC(), KrakenKey: pairs[i].Key}
	b, err := json.Marshal(a)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	rev, err := g.d.Assets.Create(ctx, streams.AssetKey(sym), b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			g.fail(w, r, errorf(http.StatusConflict, "asset_exists", "%s is already tracked", sym))
			return
		}
		g.fail(w, r, fmt.Errorf("gateway: create asset: %w", err))
		return
	}
	g.assets.wrote(streams.AssetKey(sym), rev, true)
	g.audit(ctx, "asset.add", actor, sym, "ok", remoteIP(r), "")
	writeJSON(w, http.StatusCreated, viewAsset(a))
}

// assetParam parses an asset given as BTC-USD, BTC/USD (escaped) or any
// spelling NormalizeSymbol accepts.
func assetParam(s string) (string, error) {
	sym, err := streams.NormalizeSymbol(s)
	if err != nil {
		return "", errorf(http.StatusBadRequest, "invalid_asset", "asset must look like BTC-USD or BTC/USD")
	}
	return sym, nil
}

func (g *Gateway) deleteAsset(w http.ResponseWriter, r *http.Request) {
	sym, err := assetParam(r.PathValue("id"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	_, rev, err := g.getAsset(ctx, streams.AssetKey(sym))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "unknown_asset", "%s is not tracked", sym))
		return
	}
	if err == nil {
		err = g.d.Assets.Delete(ctx, streams.AssetKey(sym), jetstream.LastRevision(rev))
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		g.fail(w, r, errorf(http.StatusConflict, "conflict", "%s changed concurrently; retry", sym))
		return
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: delete asset: %w", err))
		return
	}
	// The delete marker's revision is past the one deleted.
	g.assets.wrote(streams.AssetKey(sym), rev+1, false)
	g.audit(ctx, "asset.delete", claimsOf(r).Subject, sym, "ok", remoteIP(r), "")
	w.WriteHeader(http.StatusNoContent)
}

func (g *Gateway) krakenAssets(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := g.io(r)
	defer cancel()
	pairs, fetched, err := g.pairs.get(ctx)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pairs": pairs, "fetched_at": fetched.UTC()})
}
