package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// MaxWatchlist bounds a user's watchlist: every entry is two websocket
// channels on the dashboard, and the hub allows a client 32 by default.
const MaxWatchlist = 12

// preferences is one user's dashboard record in the preferences bucket,
// keyed by username. It lives on the server so that a user finds the same
// watchlist in every browser.
type preferences struct {
	streams.Schema
	// Watchlist is the assets shown on the home page, in order; empty
	// shows every tracked asset.
	Watchlist []string         `json:"watchlist"`
	Interval  streams.Interval `json:"interval"`
	UpdatedAt time.Time        `json:"updated_at"`
}

type preferencesView struct {
	Watchlist []string   `json:"watchlist"`
	Interval  string     `json:"interval"`
	UpdatedAt *time.Time `json:"updated_at"`
}

func viewPreferences(p preferences) preferencesView {
	v := preferencesView{Watchlist: p.Watchlist, Interval: p.Interval.String()}
	if v.Watchlist == nil {
		v.Watchlist = []string{}
	}
	if !p.UpdatedAt.IsZero() {
		t := p.UpdatedAt.UTC()
		v.UpdatedAt = &t
	}
	return v
}

// loadPreferences reads a user's record; a user who never saved one gets
// the defaults at revision 0.
func (g *Gateway) loadPreferences(r *http.Request, user string) (preferences, uint64, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	e, err := g.d.Prefs.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return preferences{Interval: streams.Interval1m}, 0, nil
	}
	if err != nil {
		return preferences{}, 0, fmt.Errorf("gateway: get preferences: %w", err)
	}
	var p preferences
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return preferences{}, 0, fmt.Errorf("gateway: decode preferences of %s: %w", user, err)
	}
	return p, e.Revision(), nil
}

func (g *Gateway) getPreferences(w http.ResponseWriter, r *http.Request) {
	p, _, err := g.loadPreferences(r, claimsOf(r).Subject)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewPreferences(p))
}

// putPreferences replaces the fields given. Every watchlist entry must be a
// tracked asset, spelt once; the stored spelling is the canonical BTC/USD.
func (g *Gateway) putPreferences(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Watchlist *[]string `json:"watchlist"`
		Interval  *string   `json:"interval"`
	}
	if err := g.decodeJSON(w, r, &body); err != nil {
		g.fail(w, r, err)
		return
	}
	var list []string
	if body.Watchlist != nil {
		if len(*body.Watchlist) > MaxWatchlist {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_watchlist", "a watchlist holds at most %d assets", MaxWatchlist))
			return
		}
		seen := map[string]bool{}
		list = []string{}
		for _, s := range *body.Watchlist {
			sym, err := assetParam(s)
			if err != nil {
				g.fail(w, r, err)
				return
			}
			if seen[sym] {
				g.fail(w, r, errorf(http.StatusBadRequest, "invalid_watchlist", "%s is listed twice", sym))
				return
			}
			seen[sym] = true
			ok, err := g.tracked(r, sym)
			if err != nil {
				g.fail(w, r, err)
				return
			}
			if !ok {
				g.fail(w, r, errorf(http.StatusBadRequest, "unknown_asset", "%s is not tracked", sym))
				return
			}
			list = append(list, sym)
		}
	}
	var iv streams.Interval
	if body.Interval != nil {
		var err error
		if iv, err = streams.ParseInterval(*body.Interval); err != nil {
			g.fail(w, r, errorf(http.StatusBadRequest, "invalid_interval", "interval must be one of 1m 5m 15m 30m 1h 4h 1d 1w 15d"))
			return
		}
		// A default interval the system does not run would open the
		// dashboard on channels the hub refuses.
		if !slices.Contains(g.cfg.Hub.Intervals, iv) {
			g.fail(w, r, errorf(http.StatusBadRequest, "not_tracked", "interval %s is not run here (runs %s)", iv, strings.Join(g.intervalNames(), " ")))
			return
		}
	}
	user := claimsOf(r).Subject
	p, rev, err := g.loadPreferences(r, user)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if body.Watchlist != nil {
		p.Watchlist = list
	}
	if body.Interval != nil {
		p.Interval = iv
	}
	p.V, p.UpdatedAt = streams.SchemaVersion, g.now().UTC()
	b, err := json.Marshal(p)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	// Compare-and-swap: two tabs saving at once must not silently drop one.
	if rev == 0 {
		_, err = g.d.Prefs.Create(ctx, user, b)
	} else {
		_, err = g.d.Prefs.Update(ctx, user, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		g.fail(w, r, errorf(http.StatusConflict, "conflict", "the preferences changed concurrently; reload and retry"))
		return
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("gateway: store preferences: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, viewPreferences(p))
}

// dropPreferences removes a deleted user's record, so that a new user of
// the same name starts from the defaults. A failure is logged: the user is
// gone already.
func (g *Gateway) dropPreferences(r *http.Request, user string) {
	ctx, cancel := g.io(r)
	defer cancel()
	if err := g.d.Prefs.Delete(ctx, user); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		g.log.Warn("preferences of a deleted user kept", "username", user, "err", err)
	}
}
