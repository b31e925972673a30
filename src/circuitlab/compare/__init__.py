"""CAA ↔ circuit, per behaviour: do a steering vector's neurons coincide with a circuit's, how
many neurons write the vector, and which steers better per unit of side effect (`stage`)."""
