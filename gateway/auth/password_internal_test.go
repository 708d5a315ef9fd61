package auth

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// A login for a name that does not exist spends a comparison at the cost
// of a real hash, so the response time does not tell which names exist
// (issue 11 item 3). The comparison is observed rather than timed.
func TestUnknownUserCostsAsMuchAsAKnownOne(t *testing.T) {
	var costs []int
	compare = func(hash, pw []byte) error {
		c, err := bcrypt.Cost(hash)
		if err != nil {
			t.Fatalf("compared against a non-hash: %v", err)
		}
		costs = append(costs, c)
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	t.Cleanup(func() { compare = bcrypt.CompareHashAndPassword })
	for _, cost := range []int{bcrypt.MinCost, 6} {
		known, err := HashPassword("a-real-password", cost)
		if err != nil {
			t.Fatal(err)
		}
		costs = nil
		if CheckPassword(known, "a-wrong-password", cost) {
			t.Fatal("a wrong password matched")
		}
		if CheckPassword("", "a-wrong-password", cost) {
			t.Fatal("an unknown user matched")
		}
		if len(costs) != 2 || costs[0] != costs[1] || costs[0] != cost {
			t.Fatalf("cost %d: known and unknown users compared at costs %v", cost, costs)
		}
	}
}
