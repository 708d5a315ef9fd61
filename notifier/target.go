package notifier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// ErrForbiddenTarget reports a webhook address the notifier refuses to
// call: not http(s), or on a loopback, link-local, private or otherwise
// internal network. A webhook feature that calls whatever a user names is
// a server-side request forgery hole (cloud metadata at 169.254.169.254,
// admin ports on localhost), so the check runs when a rule is stored and
// again on every connection, after DNS, so that a name that resolves to a
// public address at creation and to 127.0.0.1 later is still refused.
var ErrForbiddenTarget = errors.New("notifier: forbidden webhook target")

// Resolver looks up a host's addresses; net.DefaultResolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// forbiddenAddr reports why an address may not be called, or "".
func forbiddenAddr(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "an invalid address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local address"
	case a.IsPrivate():
		return "a private address"
	case a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "not a unicast address"
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return "an internal address"
		}
	}
	return ""
}

// internalPrefixes are the special-purpose ranges the netip predicates do
// not name: carrier-grade NAT, this-network, IETF protocol assignments,
// benchmarking, and NAT64's well-known prefix (which maps to IPv4 inside).
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
}

// CheckTarget validates a webhook URL: http or https, a host, no
// credentials in it, and (unless allowPrivate) every address the host
// resolves to public.
func CheckTarget(ctx context.Context, raw string, allowPrivate bool, res Resolver) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %s does not parse", ErrForbiddenTarget, raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q (only http and https)", ErrForbiddenTarget, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%w: credentials in the URL (use the rule's secret)", ErrForbiddenTarget)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: no host", ErrForbiddenTarget)
	}
	if allowPrivate {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if why := forbiddenAddr(a); why != "" {
			return fmt.Errorf("%w: %s is %s", ErrForbiddenTarget, host, why)
		}
		return nil
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return fmt.Errorf("%w: %s is a loopback name", ErrForbiddenTarget, host)
	}
	addrs, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("%w: %s does not resolve", ErrForbiddenTarget, host)
	}
	for _, a := range addrs {
		if why := forbiddenAddr(a); why != "" {
			return fmt.Errorf("%w: %s resolves to %s, %s", ErrForbiddenTarget, host, a, why)
		}
	}
	return nil
}

// dialControl refuses, at connect time, an address CheckTarget would have
// refused: this is what defeats DNS rebinding, since it sees the address
// actually dialled.
func dialControl(allowPrivate bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: dial %s", ErrForbiddenTarget, address)
		}
		if why := forbiddenAddr(ap.Addr()); why != "" {
			return fmt.Errorf("%w: %s is %s", ErrForbiddenTarget, ap.Addr(), why)
		}
		return nil
	}
}

// SafeDialer is a dialer that applies the target check to every
// connection it opens.
func SafeDialer(allowPrivate bool) *net.Dialer {
	return &net.Dialer{Control: dialControl(allowPrivate)}
}
