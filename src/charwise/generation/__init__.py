"""Text out: sampling parameters, step engines, the sampling loop, beam search, stops, primes."""
