"""The only place Ray appears: cluster start-up, Ray reporters, Ray Train and Ray Tune launchers."""
