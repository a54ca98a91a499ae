// C++ records: base classes, methods, static members, nested types and a
// vtable pointer, which the converter must step over in field lists.
struct Base {
	int BaseValue;
	virtual int Get() const { return BaseValue; }
};

struct Derived : Base {
	enum class Mode : unsigned short { Off = 0, On = 1, Auto = 0xffff };
	struct Nested {
		Derived *Owner;
		Mode State;
	};
	static int Instances;
	Nested Inner;
	long long Counter;
	int Get() const override { return (int)Counter; }
	void Bump() { Counter++; }
};

int Derived::Instances = 3;
Derived GlobalDerived;

extern "C" int CxxEntry(Derived *d)
{
	d->Bump();
	return d->Get() + Derived::Instances;
}
