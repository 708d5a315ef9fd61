package notifier

import (
	"time"

	"cryptostream/streams"
)

// SystemConfig is the rule set that works with nothing stored: it comes
// from flags, and its alerts reach every user (its security alerts, every
// admin).
type SystemConfig struct {
	// MovePercent over MoveWindow, on every tracked asset (0: none).
	MovePercent float64
	MoveWindow  time.Duration
	// MoveCooldown between two firings of one asset's move rule.
	MoveCooldown time.Duration
	// FailedLogins within FailedLoginsWindow, per username and per client
	// address (0: none).
	FailedLogins       int
	FailedLoginsWindow time.Duration
	// RoleChanges and UserDeletions fire on every such audit event.
	RoleChanges, UserDeletions bool
}

// DefaultSystem is what `run` starts with: a 2% move in 15 minutes on
// every tracked asset, and the security rules.
var DefaultSystem = SystemConfig{
	MovePercent: 2, MoveWindow: 15 * time.Minute, MoveCooldown: 30 * time.Minute,
	FailedLogins: 20, FailedLoginsWindow: time.Minute, RoleChanges: true, UserDeletions: true,
}

// SystemRules is the system rule set for the tracked symbols.
func SystemRules(c SystemConfig, symbols []string) []Rule {
	var out []Rule
	if c.MovePercent > 0 && c.MoveWindow > 0 {
		for _, sym := range symbols {
			r := Rule{ID: "system-move-" + streams.AssetKey(sym), Owner: SystemOwner, Name: "system move",
				Kind: KindPercentMove, Symbol: sym, Interval: streams.Interval1m, Direction: Either,
				Threshold: c.MovePercent, Window: Duration(c.MoveWindow), Cooldown: Duration(c.MoveCooldown),
				Hysteresis: 0.25, Trigger: TriggerOncePerClose}
			out = append(out, r)
		}
	}
	if c.FailedLogins > 0 && c.FailedLoginsWindow > 0 {
		for _, per := range []Per{PerUsername, PerIP} {
			out = append(out, Rule{ID: "system-failed-logins-" + string(per), Owner: SystemOwner, Kind: KindFailedLogins,
				Threshold: float64(c.FailedLogins), Count: c.FailedLogins, Window: Duration(c.FailedLoginsWindow), Per: per, Trigger: TriggerOncePerClose})
		}
	}
	if c.RoleChanges {
		out = append(out, Rule{ID: "system-role-granted", Owner: SystemOwner, Kind: KindRoleGranted, Trigger: TriggerOncePerClose})
	}
	if c.UserDeletions {
		out = append(out, Rule{ID: "system-user-deleted", Owner: SystemOwner, Kind: KindUserDeleted, Trigger: TriggerOncePerClose})
	}
	return out
}
