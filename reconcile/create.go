package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// InvalidError is bad input: Field names what was wrong.
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, a ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, a...)}
}

// WrongNodeError is a create for a profile that another node declares
// (many nodes on one database): only that node may run its connect script
// and write its device. Nothing was stored.
type WrongNodeError struct {
	Profile string
	Nodes   []string // the nodes declaring it, sorted
}

func (e *WrongNodeError) Error() string {
	q := make([]string, len(e.Nodes))
	for i, n := range e.Nodes {
		q[i] = strconv.Quote(n)
	}
	return fmt.Sprintf("profile %q belongs to node %s; send the request to that node", e.Profile, strings.Join(q, " or "))
}

// RejectedError is a create refused by the connect script. Nothing was kept:
// no row, no device peer, no event.
type RejectedError struct {
	ExitCode int
	TimedOut bool
	Err      error // the script could not be run at all
	// Output is the last line of the script's stderr, cut at
	// hooks.MaxLineLen bytes (hooks.LastLine).
	Output string
}

// Error is the message the API's 403 and the CLI print alike: what the
// script did, and the last line of its stderr when it wrote one.
func (e *RejectedError) Error() string {
	var msg string
	switch {
	case e.TimedOut:
		msg = "rejected by connect script: it timed out"
	case e.Err != nil:
		return fmt.Sprintf("rejected by connect script: it could not be run: %v", e.Err)
	default:
		msg = fmt.Sprintf("rejected by connect script: exit status %d", e.ExitCode)
	}
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// ErrRemoved is a create whose config was deleted or revoked while its
// connect script ran. Nothing is on the device; the D event is recorded.
var ErrRemoved = errors.New("the config was removed while its connect script ran")

// The bounds of a create's connect step, which the stale-pending age
// (staleAge) exceeds, so that a connect script never still runs when the
// stale cleanup announces its disconnect:
//
//   - the script starts within startBudget of the insert: the wait for a
//     free slot (at most hooks.queue_timeout) plus startSlack for checking
//     the script's path and recording the start; a start later than that
//     is refused as busy;
//   - once started, it is gone within runBound: the start of its process
//     (at most hooks.StartLimit), its timeout (waiting never counts
//     against it), the SIGTERM-to-SIGKILL grace, as long again for the
//     reaping, and the output drain.
const startSlack = 5 * time.Second

func startBudget(queue time.Duration) time.Duration { return queue + startSlack }

func runBound(timeout, killGrace time.Duration) time.Duration {
	return hooks.StartLimit + timeout + 2*killGrace + time.Second
}

// ErrScriptBusy is matched by a create refused because every script slot
// stayed busy for hooks.queue_timeout: the connect script did not run and
// nothing was kept. See BusyError.
var ErrScriptBusy = errors.New("too many connect scripts are running")

// BusyError is a create refused by a full script queue; it matches
// ErrScriptBusy. RetryAfter is when trying again makes sense.
type BusyError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%v (%v); nothing was kept, try again in %s", ErrScriptBusy, e.Err, config.FormatDuration(e.RetryAfter))
}
func (e *BusyError) Is(target error) bool { return target == ErrScriptBusy }
func (e *BusyError) Unwrap() error        { return e.Err }

// ErrScriptUnsafe is matched by a create refused because the script's path
// failed the trust check before the run (see hooks.CheckScript): the
// script did not run and nothing was kept. errors.As to *hooks.UnsafeError
// gives the path and its mode.
var ErrScriptUnsafe = errors.New("connect script not run: its path is not trusted")

// errStartTooLate refuses a connect script whose start would come so late
// that it might still run when the stale cleanup sends its D.
var errStartTooLate = errors.New("too late to start the connect script safely")

// ErrInProgress is a retried create whose first attempt is still running
// its connect script.
var ErrInProgress = errors.New("a create for this public key is still in progress")

// CreateRequest asks for a new config.
type CreateRequest struct {
	UserID    string
	ProfileID string
	// PublicKey is the client's key; nil means wgkeeper generates the key
	// pair and returns the private key once, without storing it.
	PublicKey     *wgtypes.Key
	DisplayName   string
	ExpiresAt     time.Time     // zero: the profile's default
	ExpiresIn     time.Duration // used when ExpiresAt is zero; 0: default
	OriginatingIP netip.Addr
}

// Created is a config ready to hand to the client.
type Created struct {
	Peer store.Peer
	// Existing is true when the request was a retry of a config that exists.
	Existing bool
	// PrivateKey is set only when wgkeeper generated the key pair.
	PrivateKey *wgtypes.Key
	Client     ClientConfig
}

// MaxUserIDLen is the longest user id accepted, in bytes.
const MaxUserIDLen = 256

// ValidateUserID checks a user id: 1–256 bytes of valid UTF-8, not only
// white space, without control characters, without the bidirectional
// embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069,
// which make a name display as another) and without the line and
// paragraph separators U+2028 and U+2029 (which break log lines and
// scripts the way a newline does). The error is an *InvalidError for
// field user_id.
func ValidateUserID(u string) error {
	switch {
	case u == "":
		return invalid("user_id", "must not be empty")
	case len(u) > MaxUserIDLen:
		return invalid("user_id", "is %d bytes long; the limit is %d", len(u), MaxUserIDLen)
	case !utf8.ValidString(u):
		return invalid("user_id", "is not valid UTF-8")
	}
	blank := true
	for _, r := range u {
		switch {
		case unicode.IsControl(r):
			return invalid("user_id", "contains the control character %U", r)
		case isBidiControl(r):
			return invalid("user_id", "contains the bidirectional control character %U, which changes how the text around it is displayed", r)
		case r == '\u2028' || r == '\u2029':
			return invalid("user_id", "contains the line or paragraph separator %U", r)
		}
		if !unicode.IsSpace(r) && !isZeroWidth(r) {
			blank = false
		}
	}
	if blank {
		return invalid("user_id", "is only white space")
	}
	return nil
}

// isBidiControl reports the explicit directional embeddings, overrides
// and isolates (Trojan Source's characters).
func isBidiControl(r rune) bool {
	return r >= '\u202A' && r <= '\u202E' || r >= '\u2066' && r <= '\u2069'
}

// isZeroWidth reports the invisible characters that count as blank: zero
// width space, word joiner and the byte-order mark.
func isZeroWidth(r rune) bool {
	return r == '\u200B' || r == '\u2060' || r == '\uFEFF'
}

// ParseKey parses a public key in standard base64 (as wg prints it) or
// base64url, rejecting the all-zero key.
func ParseKey(s string) (wgtypes.Key, error) {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		std := strings.NewReplacer("-", "+", "_", "/").Replace(s)
		if std != s {
			k, err = wgtypes.ParseKey(std)
		}
	}
	if err != nil {
		return wgtypes.Key{}, invalid("public_key", "%q is not a WireGuard key (44 characters of base64 encoding 32 bytes)", s)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, invalid("public_key", "the all-zero key is not allowed")
	}
	return k, nil
}

// Create makes a new config: validate, reserve addresses, run the connect
// script, then activate and add the peer to the device. A retry of a create
// that succeeded (same key, user and profile) returns the existing config
// with Existing set and runs no script.
//
// Errors: *InvalidError for bad input; *RejectedError when the script said
// no; store.ErrConflict when the key belongs to another user or profile;
// store.ErrLimitReached; store.ErrPoolExhausted; ErrInProgress;
// ErrDeviceUnavailable when the interface is missing, down, unreadable or
// has another key or port than the config expects (checked before anything
// is stored or any script runs), and also when adding the peer to the
// device failed after the connect script succeeded: the config was then
// rolled back with a D event of reason "failed". Created is returned only
// with the peer on the device. ErrScriptBusy (a *BusyError) when no script
// slot came free within hooks.queue_timeout, and ErrScriptUnsafe when the
// script's path failed its trust check: in both the script did not run and
// nothing was kept.
func (e *Engine) Create(ctx context.Context, req CreateRequest) (*Created, error) {
	cfg := e.Config()
	if err := ValidateUserID(req.UserID); err != nil {
		return nil, err
	}
	prof, ok := cfg.Profile(req.ProfileID)
	if !ok {
		if e.nodes != nil {
			nodes, err := e.nodes.ProfileNodes(ctx, req.ProfileID)
			if err != nil {
				return nil, err
			}
			if len(nodes) > 0 {
				return nil, &WrongNodeError{Profile: req.ProfileID, Nodes: nodes}
			}
		}
		return nil, invalid("profile_id", "unknown profile %q", req.ProfileID)
	}
	ifc, ok := cfg.Interface(prof.Interface)
	if !ok {
		return nil, invalid("profile_id", "profile %q names unknown interface %q", prof.ID, prof.Interface)
	}
	if len(req.DisplayName) > 256 || !utf8.ValidString(req.DisplayName) || strings.ContainsFunc(req.DisplayName, unicode.IsControl) {
		return nil, invalid("display_name", "must be at most 256 bytes of UTF-8 without control characters")
	}
	if req.OriginatingIP.IsValid() && req.OriginatingIP.Zone() != "" {
		return nil, invalid("originating_ip", "must not carry a zone")
	}
	now := e.clock()
	expires, err := expiryFor(prof, req, now)
	if err != nil {
		return nil, err
	}
	// Before anything is stored or any script runs: the interface must be
	// up and readable, with the key and port the config expects.
	serverKey, err := e.checkDevice(ctx, ifc)
	if err != nil {
		return nil, err
	}
	// Addresses that peers unknown to the store keep on the device are
	// never handed out.
	avoid, err := e.heldAddrs(ctx, ifc)
	if err != nil {
		return nil, err
	}

	var priv *wgtypes.Key
	pub := wgtypes.Key{}
	if req.PublicKey != nil {
		pub = *req.PublicKey
		if pub == (wgtypes.Key{}) {
			return nil, invalid("public_key", "the all-zero key is not allowed")
		}
		if pub == serverKey {
			return nil, invalid("public_key", "is the server's own key")
		}
	} else {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return nil, fmt.Errorf("generate key pair: %w", err)
		}
		priv = &k
		pub = k.PublicKey()
	}
	var psk *wgtypes.Key
	if prof.PresharedKeys {
		k, err := wgtypes.GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("generate preshared key: %w", err)
		}
		psk = &k
	}

	begin := time.Now()
	peer, cev, err := e.store.InsertPending(ctx, store.NewPeer{
		PublicKey:     pub,
		Interface:     ifc.Name,
		ProfileID:     prof.ID,
		UserID:        req.UserID,
		DisplayName:   req.DisplayName,
		PresharedKey:  psk,
		OriginatingIP: req.OriginatingIP,
		ExpiresAt:     expires,
		IPv4Range:     prof.IPv4Range,
		IPv6Range:     prof.IPv6Range,
		MaxPerUser:    prof.MaxConfigsPerUser,
		Actor:         ActorFrom(ctx),
		Avoid:         avoid,
	})
	if errors.Is(err, store.ErrConflict) && req.PublicKey != nil {
		return e.existing(ctx, pub, req, prof, ifc, serverKey, err)
	}
	if err != nil {
		return nil, err
	}
	log := e.log.With("iface", ifc.Name, "peer", pub.String(), "user", req.UserID, "profile", prof.ID, "event_id", cev.ID, "actor", cev.Actor)
	e.point("create:inserted")

	// From here on the work finishes even if the caller goes away: the
	// script's verdict must be acted on, whatever the request does.
	ctx = context.WithoutCancel(ctx)
	// The wait for a free slot is bounded by hooks.queue_timeout, the run
	// by hooks.timeout from its start; the start is recorded first, so a
	// crash before it is cleaned without a D (the script never saw C).
	queue := queueTimeout(cfg)
	var startErr error // the start was refused
	res := e.runScript(ctx, cev, hooks.RunOptions{QueueTimeout: queue, Starting: func() error {
		if time.Since(begin) > startBudget(e.maxQ()) {
			startErr = errStartTooLate
		} else {
			startErr = e.store.MarkConnectStarted(ctx, pub, cev.ID)
		}
		if startErr != nil {
			return startErr
		}
		e.point("create:started")
		return nil
	}})
	e.point("create:script-ran")
	var unsafe *hooks.UnsafeError
	if startErr != nil || errors.Is(res.Err, hooks.ErrBusy) || errors.As(res.Err, &unsafe) {
		return nil, e.notStarted(ctx, log, pub, cev.ID, queue, res.Err)
	}
	if !res.OK() {
		if err := e.store.RejectPending(ctx, pub, cev.ID); errors.Is(err, store.ErrNotFound) {
			// Removed while the script ran: the removal recorded a D
			// event, held back until now. The connect was refused, so
			// the script must not hear of a disconnect either.
			if _, err := e.store.CancelHeldDisconnect(ctx, pub); err != nil {
				log.Error("cancel the held disconnect of a refused config", "err", err)
			}
		} else if err != nil {
			log.Error("remove rejected config", "err", err)
		}
		rej := &RejectedError{ExitCode: res.ExitCode, TimedOut: res.TimedOut, Err: res.Err, Output: hooks.LastLine(res.Stderr)}
		log.Warn("connect script rejected config", "exit_code", res.ExitCode, "timed_out", res.TimedOut, "err", res.Err)
		return nil, rej
	}
	// Activation and the device write go under the interface's device
	// lock: a delete committed after the activation removes the peer
	// from the device only once this add is done, so nothing needs
	// reading again before the write.
	l, err := e.deviceLock(ctx, ifc.Name)
	if err != nil {
		// Not activated: the stale-pending cleanup will send the D event.
		return nil, fmt.Errorf("activate %s: %w", pub, err)
	}
	if err := e.store.Activate(ctx, pub, cev.ID); errors.Is(err, store.ErrNotFound) {
		l.unlock()
		// Deleted or revoked while its connect script ran: that removal
		// recorded the D event, delivered once this script has ended.
		log.Warn("config removed while its connect script ran")
		return nil, ErrRemoved
	} else if err != nil {
		l.unlock()
		// The script said yes but the row could not be activated; the
		// stale-pending cleanup will send the D event.
		return nil, fmt.Errorf("activate %s: %w", pub, err)
	}
	peer.State = store.StateActive
	log.Info("config created", "ip_four", addrString(peer.IPv4), "ip_six", addrString(peer.IPv6), "expires_at", timeString(peer.ExpiresAt))
	e.point("create:activated")
	_, err = e.apply(ctx, ifc.Name, wg.Plan{Add: []wg.Wanted{wanted(peer)}})
	l.unlock()
	if err != nil {
		// The script saw C: the rollback is a D like any other.
		return nil, e.rollBack(ctx, peer, err, log)
	}
	return &Created{Peer: peer, PrivateKey: priv, Client: clientConfig(peer, prof, ifc, serverKey, priv)}, nil
}

// notStarted handles a connect script that was never started: the queue
// stayed full, its path failed the trust check, the config was removed
// while it waited, or its start could not be recorded. The row and its C
// event go (a removal meanwhile recorded a D, held back: cancelled, since
// no C was ever announced).
func (e *Engine) notStarted(ctx context.Context, log *slog.Logger, pub wgtypes.Key, cEventID int64, queue time.Duration, cause error) error {
	if err := e.store.RejectPending(ctx, pub, cEventID); errors.Is(err, store.ErrNotFound) {
		if _, err := e.store.CancelHeldDisconnect(ctx, pub); err != nil {
			log.Error("cancel the held disconnect of a config whose connect never started", "err", err)
		}
		if !errors.Is(cause, hooks.ErrBusy) && !errors.Is(cause, errStartTooLate) {
			log.Warn("config removed before its connect script started")
			return ErrRemoved
		}
	} else if err != nil {
		log.Error("remove config whose connect script never started", "err", err)
	}
	var ue *hooks.UnsafeError
	switch {
	case errors.Is(cause, hooks.ErrBusy) || errors.Is(cause, errStartTooLate):
		log.Warn("connect script not run: every script slot stayed busy", "queue_timeout", queue, "err", cause)
		return &BusyError{RetryAfter: queue, Err: cause}
	case errors.As(cause, &ue):
		log.Error("connect script not run: its path is not trusted", "path", ue.Path, "mode", fmt.Sprintf("%04o", ue.Mode), "err", cause)
		return fmt.Errorf("%w: %w", ErrScriptUnsafe, cause)
	}
	return fmt.Errorf("connect script of %s not started: %w", pub, cause)
}

// existing answers a create whose key is already stored.
func (e *Engine) existing(ctx context.Context, key wgtypes.Key, req CreateRequest, prof config.Profile, ifc config.Interface, serverKey wgtypes.Key, cause error) (*Created, error) {
	p, err := e.store.GetPeer(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		// Deleted in between: the caller may simply try again.
		return nil, cause
	}
	if err != nil {
		return nil, err
	}
	if p.UserID != req.UserID || p.ProfileID != req.ProfileID {
		return nil, fmt.Errorf("public key %s is already in use: %w", key, store.ErrConflict)
	}
	if p.State != store.StateActive {
		return nil, ErrInProgress
	}
	return &Created{Peer: p, Existing: true, Client: clientConfig(p, prof, ifc, serverKey, nil)}, nil
}

func expiryFor(prof config.Profile, req CreateRequest, now time.Time) (time.Time, error) {
	var exp time.Time
	switch {
	case !req.ExpiresAt.IsZero():
		exp = req.ExpiresAt.UTC()
		if !exp.After(now) {
			return time.Time{}, invalid("expires_at", "%s is not in the future", exp.Format(time.RFC3339))
		}
	case req.ExpiresIn < 0:
		return time.Time{}, invalid("expires_in", "must not be negative")
	case req.ExpiresIn > 0:
		exp = now.Add(req.ExpiresIn)
	case prof.Expiry > 0:
		exp = now.Add(prof.Expiry)
	}
	if prof.MaxExpiry > 0 {
		limit := now.Add(prof.MaxExpiry)
		if exp.IsZero() {
			exp = limit
		} else if exp.After(limit) {
			field := "expires_at"
			if req.ExpiresAt.IsZero() {
				field = "expires_in"
			}
			return time.Time{}, invalid(field, "%s is beyond the profile's maximum lifetime of %s", exp.Format(time.RFC3339), config.FormatDuration(prof.MaxExpiry))
		}
	}
	return exp, nil
}

// wanted is the device-side form of a stored peer.
func wanted(p store.Peer) wg.Wanted {
	w := wg.Wanted{PublicKey: p.PublicKey}
	if p.IPv4.IsValid() {
		w.AllowedIPs = append(w.AllowedIPs, netip.PrefixFrom(p.IPv4, 32))
	}
	if p.IPv6.IsValid() {
		w.AllowedIPs = append(w.AllowedIPs, netip.PrefixFrom(p.IPv6, 128))
	}
	if p.PresharedKey != nil {
		w.PresharedKey = *p.PresharedKey
	}
	return w
}

// runScript runs the script for an event and reports it to the observer.
func (e *Engine) runScript(ctx context.Context, ev store.Event, o hooks.RunOptions) hooks.Result {
	v := varsOf(ev)
	v.NodeName = e.Config().Node
	// The script holds this engine's owner lock while it runs: a lease of
	// an owner that died is not taken over while a script it started may
	// still run.
	v.Hold = e.ownerFile()
	if ev.Scope == store.ScopeSession {
		r := e.srun.Load().Runner
		if r == nil {
			return hooks.Result{} // no session script: nothing to run
		}
		res := r.RunWith(ctx, v, o)
		if res.Ran {
			e.obs.SessionScriptRun(ev.Kind, res.OK(), res.Duration)
		}
		return res
	}
	res := e.run.Load().RunWith(ctx, v, o)
	if res.Ran {
		e.obs.ScriptRun(ev.Kind, res.OK(), res.Duration)
	}
	return res
}

func varsOf(ev store.Event) hooks.Vars {
	return hooks.Vars{
		Event:         ev.Kind,
		UserID:        ev.UserID,
		ProfileID:     ev.ProfileID,
		ConnectionID:  ev.PublicKey.String(),
		IPFour:        ev.IPv4,
		IPSix:         ev.IPv6,
		OriginatingIP: ev.OriginatingIP,
		BytesIn:       ev.BytesIn,
		BytesOut:      ev.BytesOut,
		Reason:        ev.Reason,
		Interface:     ev.Interface,
		ExpiresAt:     ev.ExpiresAt,
		EventID:       ev.ID,
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
