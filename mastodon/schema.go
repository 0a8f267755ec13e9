package mastodon

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OwnerUsername returns the username of an account holding the Owner role,
// or "" when there is none.
func OwnerUsername(ctx context.Context, c *pgx.Conn) (string, error) {
	var name string
	err := c.QueryRow(ctx, `
		SELECT a.username FROM users u
		JOIN user_roles r ON r.id = u.role_id
		JOIN accounts a ON a.id = u.account_id
		WHERE r.name = 'Owner' ORDER BY u.id LIMIT 1`).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the Owner account: %w", err)
	}
	return name, nil
}
