package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// createPeer: POST /v1/peers.
func (s *Server) createPeer(w http.ResponseWriter, r *http.Request) error {
	if e := checkJSONType(r); e != nil {
		return e
	}
	body, e := readBody(r)
	if e != nil {
		return e
	}
	req, err := DecodeCreate(body)
	if err != nil {
		return err
	}
	c, err := s.eng.Create(r.Context(), req)
	if err != nil {
		return s.explainCreate(req, err)
	}
	resp := CreateView(c)
	status := http.StatusCreated
	if c.Existing {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/v1/peers/"+keyPath(c.Peer.PublicKey))
	writeJSON(w, status, resp)
	return nil
}

// explainCreate gives the store's sentinels a message in the portal's terms.
func (s *Server) explainCreate(req reconcile.CreateRequest, err error) error {
	prof, _ := s.eng.Config().Profile(req.ProfileID)
	switch {
	case errors.Is(err, store.ErrLimitReached):
		return apiErr(CodeLimitReached, "user %q already has %d configs in profile %q, the most it allows; remove one first",
			req.UserID, prof.MaxConfigsPerUser, req.ProfileID)
	case errors.Is(err, store.ErrPoolExhausted):
		return apiErr(CodePoolExhausted, "every address of profile %q is in use (%d configs)", req.ProfileID, prof.Capacity())
	case errors.Is(err, store.ErrConflict) && req.PublicKey != nil:
		return apiErr(CodeConflict, "public key %s is already in use by another config", req.PublicKey)
	}
	return err
}

// query reads a request's query parameters, rejecting unknown and repeated
// ones.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badField("query", "cannot be parsed: %v", err)
	}
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return nil, badField(k, "unknown query parameter (this endpoint takes none)")
			}
			return nil, badField(k, "unknown query parameter (allowed: %s)", strings.Join(allowed, ", "))
		}
		if len(v) > 1 {
			return nil, badField(k, "given %d times; give it once", len(v))
		}
	}
	return q, nil
}

func queryInt(q url.Values, name string, min, max int64) (int64, bool, error) {
	v := q.Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, false, badField(name, "%q is not a whole number from %d to %d", v, min, max)
	}
	return n, true, nil
}

// listPeers: GET /v1/peers?user_id=&profile_id=&interface=&state=&limit=.
func (s *Server) listPeers(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "user_id", "profile_id", "interface", "state", "limit")
	if err != nil {
		return err
	}
	f := store.PeerFilter{UserID: q.Get("user_id"), ProfileID: q.Get("profile_id"), Interface: q.Get("interface")}
	if f.UserID != "" {
		if err := reconcile.ValidateUserID(f.UserID); err != nil {
			return err
		}
	}
	switch st := store.State(q.Get("state")); st {
	case "", store.StateActive, store.StatePending:
		f.State = st
	default:
		return badField("state", "%q is not a state (want active or pending)", st)
	}
	limit, _, err := queryInt(q, "limit", 1, 1<<31-1)
	if err != nil {
		return err
	}
	f.Limit = int(limit)
	out, err := s.source().Peers(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// addLive fills the live fields of out (parallel to peers) with one device
// read per interface and returns the interfaces that could not be read.
func (s *Server) addLive(ctx context.Context, peers []store.Peer, out []PeerJSON) map[string]string {
	return s.source().addLive(ctx, peers, out)
}

// readDevice reads an interface, counting failures in the metrics.
// Within a request whose context carries a deviceReads (the admin page),
// each interface is read once and the result shared.
func (s *Server) readDevice(ctx context.Context, iface string) (*wg.Device, error) {
	if dr, ok := ctx.Value(deviceReadsKey{}).(*deviceReads); ok {
		return dr.read(ctx, s, iface)
	}
	d, err := s.dev.Read(ctx, iface)
	if err != nil {
		s.metrics.DeviceReadError(iface)
		return nil, err
	}
	return d, nil
}

// live is a config's state on its device; online as ov says, on the
// device only.
func live(p store.Peer, onDev map[wgtypes.Key]wg.Peer, ov onlineView) *LiveJSON {
	dp, ok := onDev[p.PublicKey]
	l := &LiveJSON{OnDevice: ok}
	if !ok {
		l.InSync = p.State != store.StateActive
		return l
	}
	l.InSync = p.State == store.StateActive && wg.InSync(reconcile.WantedPeer(p), dp)
	l.RxBytes, l.TxBytes = dp.RxBytes, dp.TxBytes
	if !dp.LastHandshake.IsZero() {
		hs := dp.LastHandshake.UTC()
		l.LastHandshake = &hs
	}
	l.Online = ov.config(p.PublicKey)
	if dp.Endpoint.IsValid() {
		e := dp.Endpoint.String()
		l.Endpoint = &e
	}
	return l
}

// peerKey reads the {public_key} path parameter.
func peerKey(r *http.Request) (wgtypes.Key, error) {
	return ParseKeyParam(r.PathValue("public_key"))
}

// getPeer: GET /v1/peers/{public_key}.
func (s *Server) getPeer(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	k, err := peerKey(r)
	if err != nil {
		return err
	}
	p, err := s.st.GetPeer(r.Context(), k)
	if errors.Is(err, store.ErrNotFound) {
		return apiErr(CodeNotFound, "no config has the public key %s", k)
	}
	if err != nil {
		return err
	}
	one := []PeerJSON{peerOut(p)}
	errs := s.addLive(r.Context(), []store.Peer{p}, one)
	out := PeerResponse{Peer: one[0], DeviceError: errs[p.Interface]}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deletePeer: DELETE /v1/peers/{public_key}.
func (s *Server) deletePeer(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	k, err := peerKey(r)
	if err != nil {
		return err
	}
	rm, err := s.eng.Delete(r.Context(), k)
	if errors.Is(err, store.ErrNotFound) {
		return apiErr(CodeNotFound, "no config has the public key %s", k)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, removedOut(rm))
	return nil
}

// deleteUserPeers: DELETE /v1/users/{user_id}/peers.
func (s *Server) deleteUserPeers(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	user := r.PathValue("user_id")
	if err := reconcile.ValidateUserID(user); err != nil {
		return err
	}
	rm, err := s.eng.RevokeUser(r.Context(), user)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, removedOut(rm))
	return nil
}

// status: GET /v1/status.
func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	out, err := s.statusView(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// statusView is the answer of GET /v1/status.
func (s *Server) statusView(ctx context.Context) (StatusResponse, error) {
	return s.source().Status(ctx)
}

// source is what this server's read views are built from, with the time
// of now.
func (s *Server) source() Source {
	return Source{Engine: s.eng, Store: s.st, Read: s.readDevice, Version: s.version,
		Online: reconcile.OnlineRule(s.eng.Config().Sessions), Now: s.now()}
}

// Paging of GET /v1/events.
const (
	defaultEventLimit = 100
	maxEventLimit     = 1000
)

// listEvents: GET /v1/events?status=&event=&user_id=&public_key=&limit=&before_id=.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "status", "event", "user_id", "public_key", "limit", "before_id")
	if err != nil {
		return err
	}
	f := store.EventFilter{Status: q.Get("status"), Kind: q.Get("event"), UserID: q.Get("user_id"), Limit: defaultEventLimit}
	switch f.Status {
	case "", store.StatusRunning, store.StatusPending, store.StatusDone, store.StatusFailed:
	default:
		return badField("status", "%q is not a status (want running, pending, done or failed)", f.Status)
	}
	switch f.Kind {
	case "", store.KindConnect, store.KindDisconnect:
	default:
		return badField("event", "%q is not an event kind (want C or D)", f.Kind)
	}
	if f.UserID != "" {
		if err := reconcile.ValidateUserID(f.UserID); err != nil {
			return err
		}
	}
	if v := q.Get("public_key"); v != "" {
		k, err := ParseKeyParam(v)
		if err != nil {
			return err
		}
		f.PublicKey = &k
	}
	if n, ok, err := queryInt(q, "limit", 1, maxEventLimit); err != nil {
		return err
	} else if ok {
		f.Limit = int(n)
	}
	if n, ok, err := queryInt(q, "before_id", 1, 1<<62); err != nil {
		return err
	} else if ok {
		f.BeforeID = n
	}
	out, err := s.source().Events(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// retryEvent: POST /v1/events/{id}/retry.
func (s *Server) retryEvent(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := decodeOptional(r, &struct{}{}); err != nil {
		return err
	}
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return badField("id", "%q is not an event id (a positive whole number)", raw)
	}
	if err := s.eng.Retry(r.Context(), id); err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound):
			return apiErr(CodeNotFound, "no event has the id %d", id)
		case errors.Is(err, store.ErrConflict):
			return apiErr(CodeConflict, "event %d is not failed; only failed events can be retried", id)
		}
		return err
	}
	evs, err := s.st.ListEvents(r.Context(), store.EventFilter{AfterID: id - 1, BeforeID: id + 1, Limit: 1})
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return apiErr(CodeNotFound, "event %d was pruned after the retry", id)
	}
	writeJSON(w, http.StatusOK, EventResponse{Event: eventOut(evs[0])})
	return nil
}

// decodeOptional decodes an optional JSON body into v: no body leaves v
// alone; a body must be application/json and match v exactly.
func decodeOptional(r *http.Request, v any) error {
	body, e := readBody(r)
	if e != nil {
		return e
	}
	if body == nil {
		return nil
	}
	return decodeStrict(body, v)
}

// housekeeping: POST /v1/housekeeping, optional body {"wait": bool}.
func (s *Server) housekeeping(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	var body struct {
		Wait *bool `json:"wait"`
	}
	if err := decodeOptional(r, &body); err != nil {
		return err
	}
	wait := body.Wait != nil && *body.Wait
	sum, err := s.eng.Housekeeping(r.Context(), wait)
	if err != nil && sum.StartedAt.IsZero() {
		return err // the run did not start (busy, or the lock failed)
	}
	out := HousekeepingView(sum)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// plan: GET /v1/plan — a dry-run reconcile of every interface.
func (s *Server) plan(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	reports := s.eng.ReconcileAll(r.Context(), true)
	var unavailable []string
	for _, rep := range reports {
		if rep.Err != nil {
			if errors.Is(rep.Err, reconcile.ErrDeviceUnavailable) {
				unavailable = append(unavailable, fmt.Sprintf("%s: %v", rep.Interface, rep.Err))
				continue
			}
			return fmt.Errorf("plan %s: %w", rep.Interface, rep.Err)
		}
	}
	if len(unavailable) > 0 {
		return apiErr(CodeDeviceUnavailable, "cannot plan without reading every device: %s", strings.Join(unavailable, "; "))
	}
	writeJSON(w, http.StatusOK, PlanOf(reports))
	return nil
}

// healthz: GET /healthz — the process serves and the database answers.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.st.Version(ctx); err != nil {
		return fmt.Errorf("health check: database: %w", err)
	}
	// An interface whose orphan removal is blocked needs the operator.
	if b := s.eng.Blocked(); len(b) > 0 {
		e := apiErr(CodeBlocked, "%s", blockedMessage(b))
		for _, st := range b {
			e.Blocked = append(e.Blocked, BlockedInterface{Interface: st.Interface, Orphans: st.Orphans, OrphanRemovalLimit: st.Limit})
		}
		writeError(w, e)
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// blockedMessage names every blocked interface and what to do.
func blockedMessage(b []reconcile.OrphanState) string {
	parts := make([]string, len(b))
	for i, st := range b {
		parts[i] = fmt.Sprintf("interface %s is blocked: %d orphans, more than orphan_removal_limit %d; none removed; %s",
			st.Interface, st.Orphans, st.Limit, reconcile.ForceHint(st.Interface))
	}
	return strings.Join(parts, "; ")
}

// serveMetrics: GET /metrics in the Prometheus text format.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metrics.Handler().ServeHTTP(w, r)
	return nil
}

// connectionLog answers GET /v1/log: who held an address at an instant (ip, at:
// RFC 3339, default now), with the client sessions covering that instant,
// or a user's configs past and present with all their sessions (user_id).
func (s *Server) connectionLog(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "ip", "at", "user_id")
	if err != nil {
		return err
	}
	ip, at, user := q.Get("ip"), q.Get("at"), q.Get("user_id")
	if (ip == "") == (user == "") {
		return badField("ip", "give ip (and optionally at) or user_id, not both")
	}
	if ip == "" {
		if at != "" {
			return badField("at", "goes with ip")
		}
		if err := reconcile.ValidateUserID(user); err != nil {
			return err
		}
		out, err := LogOfUser(r.Context(), s.st, user)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return badField("ip", "%q is not an IP address", ip)
	}
	when := s.now()
	if at != "" {
		if when, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return badField("at", "%q is not an RFC 3339 time such as 2026-11-24T14:03:00Z", at)
		}
	}
	out, err := LogOfAddr(r.Context(), s.st, addr.Unmap(), when.UTC())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
