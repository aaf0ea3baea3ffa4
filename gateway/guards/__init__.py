"""Guard routing: forward calls to named guard services with the caller's own Clerk token."""
