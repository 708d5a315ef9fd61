package streams

import "time"

// ModelUpdated is a trainer's decision about a new model, published on
// MODELS so that whoever shows or uses models can react without polling the
// registry. The registry bucket stays the state; this is the notice.
type ModelUpdated struct {
	Schema
	ModelID  string   `json:"model_id"`
	Symbol   string   `json:"symbol"`
	Interval Interval `json:"interval"`
	// Promoted says whether ModelID became the champion; Champion is the
	// series' champion after the decision (empty when there is none).
	Promoted bool      `json:"promoted"`
	Champion string    `json:"champion,omitempty"`
	Decision string    `json:"decision"`
	At       time.Time `json:"at"`
}

// Subject implements Event.
func (m *ModelUpdated) Subject() string { return ModelsUpdatedSubject(m.Symbol) }

// MsgID is one notice per model: retraining under the same id is a retry.
func (m *ModelUpdated) MsgID() string { return "models.updated:" + m.ModelID }

// Validate implements Event.
func (m *ModelUpdated) Validate() error {
	if err := ValidateSymbol(m.Symbol); err != nil {
		return invalid("models.updated: %v", err)
	}
	switch {
	case m.ModelID == "" || m.Decision == "":
		return invalid("models.updated: model id and decision are required")
	case !m.Interval.Valid():
		return invalid("models.updated: unknown interval %d", int(m.Interval))
	case m.At.IsZero():
		return invalid("models.updated: zero time")
	}
	return nil
}
