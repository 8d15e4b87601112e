package scale

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/termtext"
)

// Alert labels read by AlertActions when the route does not name the
// service or the direction; the first one set wins.
var (
	AlertServiceLabels   = []string{"underlay_service", "service", "swarm_service", "container_label_com_docker_swarm_service_name"}
	AlertDirectionLabels = []string{"underlay_direction", "direction", "scale"}
)

// AlertmanagerMessage is Alertmanager's webhook body, version 4.
type AlertmanagerMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of an AlertmanagerMessage.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// maxFingerprint bounds an alert's fingerprint, which keys its firing in
// memory and in the AlertLog: Alertmanager's are 16 hex digits.
const maxFingerprint = 128

// maxAlertName bounds the alert name kept of an alert (its alertname
// label): Prometheus's are identifiers.
const maxAlertName = 256

// ErrBadWebhook is wrapped by ParseAlertmanager's errors (400).
var ErrBadWebhook = errors.New("bad Alertmanager webhook")

// MaxAlerts bounds the alerts of one notification: each may cost a lookup
// in Consul KV and a decision, under the lock every webhook takes. Set
// max_alerts in Alertmanager's webhook_config to this or less; a
// notification of more is refused whole (413), since acting on a part
// would be a guess.
const MaxAlerts = 1000

// ErrTooManyAlerts is wrapped by ParseAlertmanager's error for a
// notification of more than MaxAlerts alerts (413).
var ErrTooManyAlerts = errors.New("too many alerts in one notification")

// ParseAlertmanager decodes an Alertmanager webhook body; it must be
// version 4 and carry an alerts list of at most MaxAlerts alerts.
func ParseAlertmanager(r io.Reader) (AlertmanagerMessage, error) {
	var raw struct {
		AlertmanagerMessage
		Alerts alertList `json:"alerts"`
	}
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, ErrTooManyAlerts) {
			return AlertmanagerMessage{}, fmt.Errorf("%w: %w", ErrBadWebhook, err)
		}
		return AlertmanagerMessage{}, fmt.Errorf("%w: malformed JSON: %w", ErrBadWebhook, err)
	}
	// Anything after would be ignored: a second notification's alerts
	// never acted on, while the sender, or a log, counts them sent.
	if _, err := dec.Token(); err != io.EOF {
		return AlertmanagerMessage{}, fmt.Errorf("%w: malformed JSON: data after the JSON object", ErrBadWebhook)
	}
	if raw.Version != "4" {
		return AlertmanagerMessage{}, fmt.Errorf("%w: version %s, want \"4\"", ErrBadWebhook, termtext.Q(raw.Version))
	}
	if raw.Alerts.alerts == nil {
		return AlertmanagerMessage{}, fmt.Errorf("%w: no alerts list", ErrBadWebhook)
	}
	msg := raw.AlertmanagerMessage
	msg.Alerts = raw.Alerts.alerts
	return msg, nil
}

// alertList decodes a JSON list of alerts one at a time, so that a list
// longer than MaxAlerts is refused before it is decoded: a 4 MiB body
// holds a million empty alerts, some hundred megabytes as Alert values. A
// JSON null leaves alerts nil (no list).
type alertList struct {
	alerts []Alert
}

func (l *alertList) UnmarshalJSON(b []byte) error {
	l.alerts = nil // a repeated key: the last one counts, as for any field
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return errors.New("alerts: want a list")
	}
	l.alerts = []Alert{}
	for n := 0; dec.More(); n++ {
		if n == MaxAlerts {
			return tooManyAlerts(dec, n)
		}
		var a Alert
		if err := dec.Decode(&a); err != nil {
			return fmt.Errorf("alert %d: %w", n, err)
		}
		l.alerts = append(l.alerts, a)
	}
	return nil
}

// tooManyAlerts counts the rest of a list decoded up to n alerts, without
// keeping them, for an error that names the count.
func tooManyAlerts(dec *json.Decoder, n int) error {
	var skip json.RawMessage // reused: a count, not the alerts
	for ; dec.More(); n++ {
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("alert %d: %w", n, err)
		}
	}
	return fmt.Errorf("%w: %d alerts, at most %d (set max_alerts: %d in Alertmanager's webhook_config)", ErrTooManyAlerts, n, MaxAlerts, MaxAlerts)
}

// LooksLikeAlertmanager reports whether a JSON body is an Alertmanager
// webhook (it has "alerts" and "version"), so that Orbiter's routes can
// take Alertmanager's notifications without scaling on resolved ones.
func LooksLikeAlertmanager(body []byte) bool {
	var probe struct {
		Version *string          `json:"version"`
		Alerts  *json.RawMessage `json:"alerts"`
	}
	return json.Unmarshal(body, &probe) == nil && probe.Version != nil && probe.Alerts != nil
}

// AlertAction is what one alert of a webhook asks for.
type AlertAction struct {
	// Key identifies the firing: fingerprint and start time; empty when
	// the fingerprint is over maxFingerprint bytes (Fingerprint is then
	// its start) or the start time is outside the years 0 to 9999 in UTC
	// (StartsAt is then zero).
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	StartsAt    time.Time `json:"starts_at"`
	AlertName   string    `json:"alertname,omitempty"`
	Service     string    `json:"service,omitempty"`
	Direction   Direction `json:"direction,omitempty"`
	// Skip says why the alert asks for nothing (resolved, a duplicate
	// within the message, a label missing); empty when it asks to scale.
	Skip string `json:"skip,omitempty"`
	// Bad is true when Skip is the sender's mistake (a label missing).
	Bad bool `json:"-"`
}

// AlertActions maps a webhook to one action per alert. The route's
// service and direction, when given, win over the alert's labels. Resolved
// alerts and second copies of a firing within the message ask for nothing.
func AlertActions(msg AlertmanagerMessage, routeService string, routeDir Direction) []AlertAction {
	out := make([]AlertAction, 0, len(msg.Alerts))
	seen := map[string]bool{}
	for _, a := range msg.Alerts {
		fp := a.Fingerprint
		if fp == "" {
			fp = labelsFingerprint(a.Labels)
		}
		act := AlertAction{Fingerprint: fp, StartsAt: a.StartsAt.UTC(), AlertName: a.Labels["alertname"]}
		if len(act.AlertName) > maxAlertName {
			// It goes into the source of the decision it makes, kept
			// in the history (in Consul, whose values are bounded).
			act.AlertName = strings.ToValidUTF8(act.AlertName[:maxAlertName], "") + "…"
		}
		long := len(fp) > maxFingerprint
		// A time JSON cannot encode would make the whole answer unsendable.
		undated := act.StartsAt.Year() < 0 || act.StartsAt.Year() > 9999
		switch {
		case long:
			// Neither kept nor sent back whole: it keys no firing.
			act.Fingerprint = strings.ToValidUTF8(fp[:32], "") + "…"
		case undated:
			act.StartsAt = time.Time{}
		default:
			act.Key = fp + "@" + act.StartsAt.Format(time.RFC3339Nano)
		}
		act.Service = first(routeService, a.Labels, AlertServiceLabels)
		dir := string(routeDir)
		if dir == "" {
			dir = firstRaw(a.Labels, AlertDirectionLabels)
		}
		switch {
		case a.Status != "firing":
			act.Skip = fmt.Sprintf("alert is %s: only firing alerts scale", termtext.Q(a.Status))
		case long:
			act.Skip, act.Bad = fmt.Sprintf("fingerprint of %d bytes (%s): at most %d", len(fp), act.Fingerprint, maxFingerprint), true
		case undated:
			act.Skip, act.Bad = fmt.Sprintf("startsAt %s is outside the years 0 to 9999 in UTC", a.StartsAt.Format(time.RFC3339Nano)), true
		case seen[act.Key]:
			act.Skip = "duplicate of an earlier alert in this notification"
		case act.Service == "":
			act.Skip, act.Bad = fmt.Sprintf("no service: set one of the labels %s, or use a route naming the service", strings.Join(AlertServiceLabels, ", ")), true
		case dir == "":
			act.Skip, act.Bad = fmt.Sprintf("no direction: set one of the labels %s to up or down, or use a route naming it", strings.Join(AlertDirectionLabels, ", ")), true
		default:
			d, err := ParseDirection(dir)
			if err != nil {
				act.Skip, act.Bad = err.Error(), true
				break
			}
			act.Direction = d
		}
		seen[act.Key] = seen[act.Key] || act.Skip == ""
		out = append(out, act)
	}
	return out
}

func first(given string, labels map[string]string, keys []string) string {
	if given != "" {
		return given
	}
	for _, k := range keys {
		if v := strings.TrimSpace(labels[k]); v != "" {
			return v
		}
	}
	return ""
}

// firstRaw is the value of the first of keys set to something not blank,
// as it is: a direction is read by ParseDirection's rule, blanks included.
func firstRaw(labels map[string]string, keys []string) string {
	for _, k := range keys {
		if v := labels[k]; strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

// labelsFingerprint stands in for a fingerprint senders other than
// Alertmanager may omit: a hash of the sorted labels.
func labelsFingerprint(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\x00", k, labels[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// AlertLog remembers which firings have scaled, so that Alertmanager's
// re-sends of a firing alert, to this instance or after a restart or a
// leader change, do not scale again.
type AlertLog interface {
	// Seen reports whether the firing key has scaled.
	Seen(ctx context.Context, key string) (bool, error)
	// Mark records that the firing key has scaled at.
	Mark(ctx context.Context, key, service string, at time.Time) error
}

// AlertResult is what one alert of a webhook did.
type AlertResult struct {
	AlertAction
	// Result is "scaled", "refused", "dry_run", "duplicate", "grouped" (an
	// earlier alert of the notification took the step for the same service
	// and direction), "skipped" (resolved, or repeated within the
	// notification) or "error" (a label missing, an unknown service, a
	// dependency unavailable).
	Result string `json:"result"`
	// Reason says why, in a sentence.
	Reason string `json:"reason"`
	// Decision is the decision made for the alert, if one was.
	Decision *Record `json:"decision,omitempty"`
	// Err is the error that kept a decision from being made.
	Err error `json:"-"`
}

// DefaultAlertMaxAge is Config.AlertMaxAge's default: a day less than the
// 7 days the alert log in Consul keeps a firing that scaled, so that no
// firing it may have forgotten acts again.
const DefaultAlertMaxAge = 6 * 24 * time.Hour

// maxAlertMemory bounds the firings remembered in memory in front of an
// AlertLog: in dry-run every firing alert would scale, and a notification
// may carry MaxAlerts new ones.
const maxAlertMemory = 1 << 16

// alerts deduplicates alert firings in memory, in front of an AlertLog.
type alerts struct {
	log AlertLog
	ttl time.Duration
	// max bounds done when log is set (maxAlertMemory).
	max int

	// turn holds a token for a whole webhook, so that concurrent re-sends
	// wait (lock, unlock); it guards following fields. A channel rather
	// than a mutex: a webhook whose request ends while it waits (the one
	// before stuck on Consul) gives up rather than keep its notification.
	turn chan struct{}
	// done are the firings that scaled, with when, by key.
	done map[string]time.Time

	// pendingMu guards pending: the writer works outside the turn.
	pendingMu sync.Mutex
	// pending are the firings that scaled and are not yet in the log (their
	// mark came past the turn's time for Consul, or failed), by key;
	// writeMarks writes them after the turn, and at the latest when the
	// controller stops. At most max.
	pending map[string]pendingMark
	// wake is signalled when a firing is added to pending.
	wake chan struct{}
}

// pendingMark is a firing of alerts.pending.
type pendingMark struct {
	service string
	at      time.Time
}

// postpone queues the firing key of service, scaled at, for the log; false
// when the queue is full (it is then kept in memory only).
func (a *alerts) postpone(key, service string, at time.Time) bool {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if _, ok := a.pending[key]; !ok && len(a.pending) >= a.max {
		return false
	}
	a.pending[key] = pendingMark{service: service, at: at}
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return true
}

// isPending reports whether the firing key waits to be written: it has
// scaled, even when memory has let it go.
func (a *alerts) isPending(key string) bool {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	_, ok := a.pending[key]
	return ok
}

// lock takes the turn, or gives up when ctx ends first.
func (a *alerts) lock(ctx context.Context) error {
	select {
	case a.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *alerts) unlock() { <-a.turn }

// HandleAlerts acts on an Alertmanager webhook: once per firing alert (by
// fingerprint and start time, remembered in memory and in the AlertLog),
// never on resolved ones, and at most one step per service and direction
// per notification, whatever it groups: the first firing alert for them
// decides, the others share its outcome ("grouped" when it scaled). A
// firing is remembered only when it scaled (or would have, in dry-run), or
// was grouped with one that did: one refused for a bound or a cooldown may
// act on a later re-send. Webhooks are handled one at a time; one whose
// ctx ends while it waits for its turn acts on none of its alerts, each
// answered unavailable. Holding the turn, it checks alerts in the AlertLog
// for AlertTimeout at most: those not checked by then are answered
// unavailable too. It returns one result per alert; a result's Err says
// why no decision was made.
func (c *Controller) HandleAlerts(ctx context.Context, msg AlertmanagerMessage, routeService string, routeDir Direction, source string) []AlertResult {
	a := c.alerts
	if err := a.lock(ctx); err != nil {
		return gaveUp(AlertActions(msg, routeService, routeDir), err)
	}
	defer a.unlock()
	// The turn's Consul work ends by this deadline, whatever the
	// request's: a hung Consul must not hold the turn, and every webhook
	// queued behind it, for as long as the sender waits.
	by := time.Now().Add(c.cfg.AlertTimeout)
	turn, cancel := context.WithDeadlineCause(ctx, by,
		fmt.Errorf("the webhook's time for Consul (%v) ran out: %w", c.cfg.AlertTimeout, context.DeadlineExceeded))
	defer cancel()
	unkept := 0
	defer func() {
		if unkept > 0 {
			c.metrics.errors.WithLabelValues("alert_log").Add(float64(unkept))
			c.log.Warn("alert firings not kept in Consul: the webhook's time for Consul ran out and too many wait to be written; a restarted control could scale on them again",
				"firings", unkept, "alert_timeout", c.cfg.AlertTimeout)
		}
	}()
	now := c.cfg.Now()
	for k, at := range a.done {
		if now.Sub(at) > a.ttl {
			delete(a.done, k)
		}
	}
	var out []AlertResult
	// acted holds, by service and direction, the result of the alert that
	// acted for them in this notification: one notification is at most one
	// step per service and direction, whatever it groups (Alertmanager
	// groups the alerts of every replica of a service into one).
	acted := map[string]AlertResult{}
	for _, act := range AlertActions(msg, routeService, routeDir) {
		if act.Skip == "" && now.Sub(act.StartsAt) > c.cfg.AlertMaxAge {
			act.Skip = fmt.Sprintf("firing since %s, more than %s ago: the alert log may have forgotten whether it scaled, so it asks for nothing (a re-send of a long-firing alert, or a replay)",
				act.StartsAt.Format(time.RFC3339Nano), c.cfg.AlertMaxAge)
		}
		key := act.Service + "\x00" + string(act.Direction)
		if first, ok := acted[key]; ok && act.Skip == "" {
			res, kept := c.groupedAlert(ctx, by, act, first, now)
			if !kept {
				unkept++
			}
			out = append(out, res)
			continue
		}
		res := c.handleAlert(ctx, turn, act, source, now)
		if act.Skip == "" && res.Result != "duplicate" {
			acted[key] = res
		}
		out = append(out, res)
	}
	return out
}

// gaveUp answers the alerts of a webhook that gave up waiting for its
// turn with err: those to skip are skipped, the others unavailable, so
// that Alertmanager sends them again.
func gaveUp(acts []AlertAction, err error) []AlertResult {
	out := make([]AlertResult, len(acts))
	for i, act := range acts {
		res := AlertResult{AlertAction: act, Result: "error"}
		if act.Skip != "" {
			res.Reason = act.Skip
			if !act.Bad {
				res.Result = "skipped"
			}
		} else {
			res.Err = fmt.Errorf("wait for the webhook before this one: %w: %w", ErrUnavailable, err)
			res.Reason = res.Err.Error()
		}
		out[i] = res
	}
	return out
}

// groupedAlert answers an alert whose service and direction an earlier
// alert of the same notification acted on: it shares that alert's outcome
// without a decision of its own. When that alert scaled, this firing is
// remembered as if it had, so that a re-send of the notification takes no
// step for it either; after a refusal or an error it may act later.
// Its mark in the AlertLog ends by by, the end of the turn's time for
// Consul; past it, the firing is written after the turn (writeMarks), and
// kept is false only when too many wait already: it is then kept in
// memory only.
func (c *Controller) groupedAlert(ctx context.Context, by time.Time, act AlertAction, first AlertResult, now time.Time) (res AlertResult, kept bool) {
	a := c.alerts
	res = AlertResult{AlertAction: act, Decision: first.Decision, Err: first.Err, Result: first.Result, Reason: first.Reason}
	if first.Result != "scaled" && first.Result != "dry_run" {
		return res, true
	}
	if a.scaled(act.Key) {
		res.Result, res.Reason = "duplicate", "this firing (fingerprint and start time) has already scaled"
		return res, true
	}
	res.Result = "grouped"
	res.Reason = fmt.Sprintf("one notification takes at most one step per service and direction: alert %s (fingerprint %s) of this notification took it for %s %s",
		first.AlertName, first.Fingerprint, act.Service, act.Direction)
	if !time.Now().Before(by) {
		a.remember(act.Key, now)
		return res, a.log == nil || a.postpone(act.Key, act.Service, now)
	}
	c.markAlert(ctx, act, now, by)
	return res, true
}

// handleAlert decides on one alert: ctx is the request's, for the
// decision; turn ends with the time the turn may spend on Consul, for the
// alert log. An alert reached after turn's end is answered unavailable
// without a decision: it could not be checked.
func (c *Controller) handleAlert(ctx, turn context.Context, act AlertAction, source string, now time.Time) AlertResult {
	a := c.alerts
	res := AlertResult{AlertAction: act}
	if act.Skip != "" {
		res.Result, res.Reason = "skipped", act.Skip
		if act.Bad {
			res.Result = "error"
		}
		return res
	}
	if a.scaled(act.Key) {
		res.Result, res.Reason = "duplicate", "this firing (fingerprint and start time) has already scaled"
		return res
	}
	if !c.manages(act.Service) {
		// Answered before the alert log is read: a notification naming
		// many made-up services costs no Consul read.
		res.Result, res.Err = "error", errUnmanaged(act.Service)
		res.Reason = res.Err.Error()
		return res
	}
	if err := context.Cause(turn); err != nil {
		res.Result, res.Err = "error", fmt.Errorf("check alert %s: %w: %w", act.Key, ErrUnavailable, err)
		res.Reason = res.Err.Error()
		return res
	}
	if a.log != nil {
		seen, err := a.log.Seen(turn, act.Key)
		if err != nil {
			c.metrics.errors.WithLabelValues("alert_log").Inc()
			res.Result, res.Err = "error", fmt.Errorf("check alert %s: %w: %w", act.Key, ErrUnavailable, err)
			res.Reason = res.Err.Error()
			return res
		}
		if seen {
			a.remember(act.Key, now)
			res.Result, res.Reason = "duplicate", "this firing (fingerprint and start time) has already scaled"
			return res
		}
	}
	src := fmt.Sprintf("%s alert %s fingerprint %s", source, act.AlertName, act.Fingerprint)
	rec, err := c.Handle(ctx, Request{Autoscaler: AutoswarmName, Service: act.Service, Direction: act.Direction, Source: src})
	if err != nil {
		res.Result, res.Reason, res.Err = "error", err.Error(), err
		return res
	}
	res.Decision = &rec
	res.Reason = rec.Why
	switch {
	case rec.Refused:
		res.Result = "refused"
		return res
	case rec.DryRun:
		res.Result = "dry_run"
	default:
		res.Result = "scaled"
	}
	// The mark of a scale made gets its own HistoryTimeout, even past the
	// turn's deadline: a decision started before it is kept whole, and
	// no new one starts after it.
	c.markAlert(ctx, act, now, time.Time{})
	return res
}

// markAlert remembers that the firing of act has scaled, in memory and in
// the AlertLog, where the write ends within HistoryTimeout, and by by
// unless it is zero, but not with ctx's end: a scale made is kept even
// when its request ended. The turn is held.
func (c *Controller) markAlert(ctx context.Context, act AlertAction, now, by time.Time) {
	a := c.alerts
	a.remember(act.Key, now)
	if a.log == nil {
		return
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HistoryTimeout)
	defer cancel()
	if !by.IsZero() {
		var cancelBy context.CancelFunc
		mctx, cancelBy = context.WithDeadline(mctx, by)
		defer cancelBy()
	}
	if err := a.log.Mark(mctx, act.Key, act.Service, now); err != nil {
		c.metrics.errors.WithLabelValues("alert_log").Inc()
		if a.postpone(act.Key, act.Service, now) {
			c.log.Warn("alert firing not kept in Consul yet; it is written again after this webhook", "key", act.Key, "err", err)
		} else {
			c.log.Warn("alert firing not kept in Consul, and too many wait to be written; a restarted control could scale on it again", "key", act.Key, "err", err)
		}
	}
}

// scaled reports whether the firing key has scaled, as memory knows: done,
// or waiting to be written to the log. The turn is held.
func (a *alerts) scaled(key string) bool {
	if _, ok := a.done[key]; ok {
		return true
	}
	return a.log != nil && a.isPending(key)
}

// writeMarksLoop writes the pending firings to the AlertLog until ctx
// ends, each time one is added and, after a failure, with backoff; then
// once more, within HistoryTimeout, so that a control stopping keeps what
// it can.
func (c *Controller) writeMarksLoop(ctx context.Context) {
	a := c.alerts
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.HistoryTimeout)
			defer cancel()
			if err := c.writeMarks(fctx); err != nil {
				c.log.Warn("alert firings not kept in Consul at stop; a restarted control could scale on them again",
					"firings", a.pendingCount(), "err", err)
			}
			return
		case <-a.wake:
		case <-retry:
		}
		retry = nil
		if err := c.writeMarks(ctx); err != nil {
			if ctx.Err() != nil {
				continue // the last try, above
			}
			delay := delays.Next()
			c.log.Warn("alert firings not kept in Consul yet; will retry", "firings", a.pendingCount(), "err", err, "retry_in", delay)
			retry = time.After(delay)
			continue
		}
		delays.Reset()
	}
}

// writeMarks writes the pending firings, each within HistoryTimeout, and
// stops at the first error: Consul is then likely down for the others too.
func (c *Controller) writeMarks(ctx context.Context) error {
	a := c.alerts
	a.pendingMu.Lock()
	todo := maps.Clone(a.pending)
	a.pendingMu.Unlock()
	for key, m := range todo {
		mctx, cancel := context.WithTimeout(ctx, c.cfg.HistoryTimeout)
		err := a.log.Mark(mctx, key, m.service, m.at)
		cancel()
		if err != nil {
			c.metrics.errors.WithLabelValues("alert_log").Inc()
			return fmt.Errorf("mark alert %s: %w", key, err)
		}
		a.pendingMu.Lock()
		delete(a.pending, key)
		a.pendingMu.Unlock()
	}
	return nil
}

// pendingCount is how many firings wait to be written.
func (a *alerts) pendingCount() int {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	return len(a.pending)
}

// remember records that the firing key has scaled at now. With an
// AlertLog, a full memory is emptied first: the log answers for the
// firings it forgets, at one read each. Without one, memory is all there
// is, and nothing is forgotten before its time. The turn is held.
func (a *alerts) remember(key string, now time.Time) {
	if a.log != nil && len(a.done) >= a.max {
		clear(a.done)
	}
	a.done[key] = now
}
