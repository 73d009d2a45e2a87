"""What both services' web consoles share: login sessions in the node's database, CSRF checks,
page rendering with the errors mapped once, the base templates and the stylesheet."""
